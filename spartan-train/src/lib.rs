//! Host-side trainer for Spartan Networks (work in progress: see the trainer issue).
