//! The device side of the protocol, generic over embedded-hal 1.0 / embedded-io traits
//! so the same code runs on a board and against mocks on the host.

use crate::protocol::{
    encode, Decoder, ErrorCode, Event, CMD_CLASSIFY, CMD_ERROR, CMD_INFO, OVERHEAD, REPLY,
};
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::StatefulOutputPin;
use embedded_io::{Read, ReadReady, Write};
use spartan_core::filter::FilterKind;
use spartan_core::int8::Int8Model;
use spartan_core::spec::LayerSpec;

/// Most classes a reply can carry.
pub const MAX_CLASSES: usize = 64;
/// Bytes of an info reply's payload.
pub const INFO_LEN: usize = 20;
/// Idle milliseconds after which a partial frame is abandoned.
pub const DEFAULT_TIMEOUT_MS: u32 = 100;
/// Microseconds waited when no byte is ready: well under one byte time at 115,200
/// baud (87 µs), so a frame streams in without gaps.
pub const POLL_US: u32 = 20;

/// Model description sent in reply to [`CMD_INFO`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// CRC-32 of the model file: the model's identity.
    pub model_crc: u32,
    /// Scratch bytes inference needs.
    pub arena_bytes: u32,
    /// Learned parameters.
    pub parameters: u32,
    /// Input height, width, channels.
    pub input: [u8; 3],
    /// Number of classes.
    pub classes: u8,
    /// Layer-1 filter: 0 none, 1 Conv-Filtering, 2 Offset-Filtering.
    pub filter_kind: u8,
    /// Thresholds per channel of the filter (β), 0 without one.
    pub filter_beta: u8,
    /// Number of layers.
    pub layers: u8,
    /// Layer-1 activation index (as in the model file), 255 without a filter.
    pub filter_activation: u8,
}

impl Info {
    /// Describes a validated model.
    pub fn of(model: &Int8Model<'_>) -> Self {
        let spec = model.spec();
        let input = model.shapes()[0];
        let (kind, beta, act) = match spec.filter() {
            Some(f) => (
                match f.kind {
                    FilterKind::Conv => 1,
                    FilterKind::Offset => 2,
                },
                f.beta.min(255) as u8,
                activation_index(spec.layers[0]),
            ),
            None => (0, 0, 255),
        };
        Info {
            model_crc: model.crc(),
            arena_bytes: model.arena_len() as u32,
            parameters: spec.parameter_count().unwrap_or(0) as u32,
            input: [input.height as u8, input.width as u8, input.channels as u8],
            classes: model.classes().min(255) as u8,
            filter_kind: kind,
            filter_beta: beta,
            layers: spec.layers.len() as u8,
            filter_activation: act,
        }
    }

    /// Wire form (little-endian).
    pub fn to_bytes(&self) -> [u8; INFO_LEN] {
        let mut b = [0u8; INFO_LEN];
        b[0..4].copy_from_slice(&self.model_crc.to_le_bytes());
        b[4..8].copy_from_slice(&self.arena_bytes.to_le_bytes());
        b[8..12].copy_from_slice(&self.parameters.to_le_bytes());
        b[12..15].copy_from_slice(&self.input);
        b[15] = self.classes;
        b[16] = self.filter_kind;
        b[17] = self.filter_beta;
        b[18] = self.layers;
        b[19] = self.filter_activation;
        b
    }

    /// Parses the wire form.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; INFO_LEN] = b.try_into().ok()?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Info {
            model_crc: u32_at(0),
            arena_bytes: u32_at(4),
            parameters: u32_at(8),
            input: [b[12], b[13], b[14]],
            classes: b[15],
            filter_kind: b[16],
            filter_beta: b[17],
            layers: b[18],
            filter_activation: b[19],
        })
    }
}

/// The activation's variant index in the model file format.
fn activation_index(layer: LayerSpec) -> u8 {
    use spartan_core::activation::Activation as A;
    match layer.activation() {
        Some(A::Relu) => 0,
        Some(A::Linear) => 1,
        Some(A::Hsid) => 2,
        Some(A::Hsat) => 3,
        Some(A::CosHsat) => 4,
        Some(A::CosHsnd { .. }) => 5,
        Some(A::Hsnd { .. }) => 6,
        None => 255,
    }
}

/// Why a device could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The model file is invalid.
    Model(spartan_core::Error),
    /// The arena is smaller than the model needs.
    ArenaTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// More classes than a reply can carry.
    TooManyClasses(usize),
}

/// What one served request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// An image was classified.
    Classified(u8),
    /// The model was described.
    Info,
    /// An error reply was sent.
    Error(ErrorCode),
}

/// A classifier answering framed requests on a serial port, blinking an LED per
/// inference. The model is borrowed (from flash); the arena is caller-provided.
pub struct Device<'m, U, L, D> {
    uart: U,
    led: L,
    delay: D,
    model: Int8Model<'m>,
    arena: &'m mut [u8],
    decoder: Decoder,
    idle_us: u32,
    timeout_ms: u32,
}

impl<'m, U, L, D> Device<'m, U, L, D>
where
    U: Read + Write + ReadReady,
    L: StatefulOutputPin,
    D: DelayNs,
{
    /// Validates the model and the arena.
    pub fn new(
        uart: U,
        led: L,
        delay: D,
        model: &'m [u8],
        arena: &'m mut [u8],
    ) -> Result<Self, SetupError> {
        let model = Int8Model::load(model).map_err(SetupError::Model)?;
        if arena.len() < model.arena_len() {
            return Err(SetupError::ArenaTooSmall {
                needed: model.arena_len(),
                got: arena.len(),
            });
        }
        if model.classes() > MAX_CLASSES {
            return Err(SetupError::TooManyClasses(model.classes()));
        }
        Ok(Device {
            uart,
            led,
            delay,
            model,
            arena,
            decoder: Decoder::new(),
            idle_us: 0,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        })
    }

    /// Changes the idle time after which a partial frame is abandoned.
    pub fn with_timeout_ms(mut self, ms: u32) -> Self {
        self.timeout_ms = ms.max(1);
        self
    }

    /// The model being served.
    pub fn model(&self) -> &Int8Model<'m> {
        &self.model
    }

    /// Gives the peripherals back (tests inspect their mocks).
    pub fn release(self) -> (U, L, D) {
        (self.uart, self.led, self.delay)
    }

    /// Handles every byte available now; if none, waits [`POLL_US`] (counting towards
    /// the frame timeout). Reports each request answered to `answered`.
    pub fn poll(&mut self, answered: &mut impl FnMut(Served)) -> Result<(), U::Error> {
        let Device {
            uart,
            led,
            delay,
            model,
            arena,
            decoder,
            idle_us,
            timeout_ms,
        } = self;
        if uart.read_ready()? {
            let mut buf = [0u8; 64];
            let n = uart.read(&mut buf)?;
            *idle_us = 0;
            for &b in &buf[..n] {
                if let Some(event) = decoder.push(b) {
                    answered(respond(event, model, arena, uart, led)?);
                }
            }
        } else {
            delay.delay_us(POLL_US);
            if decoder.in_frame() {
                *idle_us += POLL_US;
                if *idle_us >= timeout_ms.saturating_mul(1000) {
                    *idle_us = 0;
                    if let Some(event) = decoder.timeout() {
                        answered(respond(event, model, arena, uart, led)?);
                    }
                }
            }
        }
        Ok(())
    }

    /// Serves forever; errors of the port are ignored (the next poll retries).
    pub fn run(&mut self) -> ! {
        loop {
            let _ = self.poll(&mut |_| {});
        }
    }
}

/// Answers one decoder event.
fn respond<U: Write, L: StatefulOutputPin>(
    event: Event<'_>,
    model: &Int8Model<'_>,
    arena: &mut [u8],
    uart: &mut U,
    led: &mut L,
) -> Result<Served, U::Error> {
    let mut out = [0u8; 1 + MAX_CLASSES + OVERHEAD];
    let (served, n) = match event {
        Event::Frame {
            cmd: CMD_INFO,
            payload: [],
        } => {
            let n = encode(CMD_INFO | REPLY, &Info::of(model).to_bytes(), &mut out);
            (Served::Info, n)
        }
        Event::Frame {
            cmd: CMD_CLASSIFY,
            payload,
        } if payload.len() == model.input_len() => {
            let mut logits = [0i8; MAX_CLASSES];
            let classes = model.classes();
            match model.infer(payload, arena, &mut logits[..classes]) {
                Ok(class) => {
                    // The LED shows activity; a pin error must not stop the service.
                    let _ = led.toggle();
                    let mut reply = [0u8; 1 + MAX_CLASSES];
                    reply[0] = class as u8;
                    for (r, &l) in reply[1..].iter_mut().zip(&logits[..classes]) {
                        *r = l as u8;
                    }
                    let n = encode(CMD_CLASSIFY | REPLY, &reply[..1 + classes], &mut out);
                    (Served::Classified(class as u8), n)
                }
                Err(_) => error_reply(ErrorCode::Inference, CMD_CLASSIFY, &mut out),
            }
        }
        Event::Frame {
            cmd: c @ (CMD_INFO | CMD_CLASSIFY),
            ..
        } => error_reply(ErrorCode::BadLength, c, &mut out),
        Event::Frame { cmd, .. } => error_reply(ErrorCode::UnknownCommand, cmd, &mut out),
        Event::Error(code) => error_reply(code, 0, &mut out),
    };
    if let Some(n) = n {
        uart.write_all(&out[..n])?;
        uart.flush()?;
    }
    Ok(served)
}

fn error_reply(code: ErrorCode, cmd: u8, out: &mut [u8]) -> (Served, Option<usize>) {
    (
        Served::Error(code),
        encode(CMD_ERROR, &[code as u8, cmd], out),
    )
}
