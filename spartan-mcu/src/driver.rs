//! The device side of the protocol (`spartan_core::protocol`), generic over
//! embedded-hal 1.0 / embedded-io traits so the same code runs on a board and against
//! mocks on the host.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::StatefulOutputPin;
use embedded_io::{Read, ReadReady, Write};
use spartan_core::int8::Int8Model;
use spartan_core::protocol::{
    encode, Classification, ErrorCode, FrameDecoder, Info, Message, Request, Response, MAX_CLASSES,
    MAX_FRAME, MAX_RESPONSE_FRAME,
};

/// Idle milliseconds after which a partial frame is abandoned.
pub const DEFAULT_TIMEOUT_MS: u32 = 100;
/// Microseconds waited when no byte is ready: well under one byte time at 115,200
/// baud (87 µs), so a frame streams in without gaps.
pub const POLL_US: u32 = 20;

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
    info: Info,
    arena: &'m mut [u8],
    decoder: FrameDecoder<MAX_FRAME>,
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
            info: Info::of(&model),
            model,
            arena,
            decoder: FrameDecoder::new(),
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
            info,
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
                let Some(frame) = decoder.push::<Request>(b) else {
                    continue;
                };
                let (id, served, response) = match frame {
                    Ok(Message { id, body }) => {
                        let (served, response) = serve(body, model, info, arena, led);
                        (id, served, response)
                    }
                    Err(e) => (e.id(), Served::Error(e.into()), Response::Error(e.into())),
                };
                send(uart, id, &response)?;
                answered(served);
            }
        } else {
            delay.delay_us(POLL_US);
            if decoder.in_frame() {
                *idle_us += POLL_US;
                if *idle_us >= timeout_ms.saturating_mul(1000) {
                    *idle_us = 0;
                    decoder.abandon();
                    send(uart, None, &Response::Error(ErrorCode::Timeout))?;
                    answered(Served::Error(ErrorCode::Timeout));
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

/// Answers one request.
fn serve<L: StatefulOutputPin>(
    request: Request<'_>,
    model: &Int8Model<'_>,
    info: &Info,
    arena: &mut [u8],
    led: &mut L,
) -> (Served, Response) {
    let image = match request {
        Request::Info => return (Served::Info, Response::Info(*info)),
        Request::Classify(image) => image,
    };
    if image.len() != model.input_len() {
        let e = ErrorCode::ImageSize {
            expected: info.input_len() as u32,
            got: u32::try_from(image.len()).unwrap_or(u32::MAX),
        };
        return (Served::Error(e), Response::Error(e));
    }
    let mut logits = [0i8; MAX_CLASSES];
    let classes = model.classes();
    match model.infer(image, arena, &mut logits[..classes]) {
        Ok(class) => {
            // The LED shows activity; a pin error must not stop the service.
            let _ = led.toggle();
            let class = class as u8;
            let reply = Classification {
                class,
                // `Device::new` checked classes ≤ MAX_CLASSES, the capacity.
                logits: heapless::Vec::from_slice(&logits[..classes]).unwrap_or_default(),
            };
            (Served::Classified(class), Response::Classified(reply))
        }
        Err(_) => (
            Served::Error(ErrorCode::Inference),
            Response::Error(ErrorCode::Inference),
        ),
    }
}

/// Writes one response frame.
fn send<U: Write>(uart: &mut U, id: Option<u16>, body: &Response) -> Result<(), U::Error> {
    let mut out = [0u8; MAX_RESPONSE_FRAME];
    // Every response fits MAX_RESPONSE_FRAME (a spartan-core test checks the largest).
    if let Ok(n) = encode(&Message { id, body }, &mut out) {
        uart.write_all(&out[..n])?;
        uart.flush()?;
    }
    Ok(())
}
