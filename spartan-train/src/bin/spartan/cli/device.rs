//! `spartan device`: list serial ports, or stream test images to a device (a board on a
//! serial port, or the firmware under QEMU) and measure it end to end.

use super::DataArgs;
use crate::device::{self, Client, Link, SerialLink, DEFAULT_BAUD};
use crate::progress::Progress;
use anyhow::{bail, Context};
use spartan_core::protocol::Info;
use spartan_train::data::{self, Split};
use spartan_train::int8::Int8Runner;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `spartan device`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("link").required(true).args(["serial", "qemu", "list"])))]
pub struct DeviceArgs {
    /// List this machine's serial ports and exit.
    #[arg(long)]
    pub list: bool,
    /// Talk to a board on this serial port (e.g. /dev/ttyUSB0, /dev/ttyACM0, COM3).
    /// spartan configures it itself: raw, 8N1, no flow control, at --baud.
    #[arg(long, value_name = "PORT")]
    pub serial: Option<String>,
    /// Baud rate of --serial (the firmware's is 115200).
    #[arg(long, default_value_t = DEFAULT_BAUD, value_parser = clap::value_parser!(u32).range(50..=12_000_000))]
    pub baud: u32,
    /// Boot this firmware ELF (spartan-fw) under qemu-system-arm (mps2-an386) and talk
    /// to its UART0 over a local TCP socket.
    #[arg(long, value_name = "ELF")]
    pub qemu: Option<PathBuf>,
    /// Test images to send (the first ones of the test set).
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    #[command(flatten)]
    pub data: DataArgs,
    /// The int8 model the device should run: its host results are compared with the
    /// device's, logit for logit.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seconds to wait for each answer, retries included (the handshake too); no read
    /// waits longer.
    #[arg(long, default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Times a request is sent again after a lost, corrupt or error reply, within
    /// --timeout.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
}

/// Seconds, between a millisecond and a day.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.001..=86_400.0).contains(&secs) {
        return Err(format!(
            "{s} s is out of range: give 0.001 to 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Kills QEMU when dropped, so a failing run never leaves it spinning.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot_qemu(elf: &std::path::Path) -> anyhow::Result<(Qemu, TcpStream)> {
    anyhow::ensure!(elf.is_file(), "{}: no such firmware file", elf.display());
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("qemu-system-arm")
        .args([
            "-machine",
            "mps2-an386",
            "-cpu",
            "cortex-m4",
            "-nographic",
            "-monitor",
            "none",
        ])
        .args(["-semihosting-config", "enable=on,target=native"])
        .arg("-serial")
        .arg(format!(
            "tcp:127.0.0.1:{port},server=on,wait=off,nodelay=on"
        ))
        .arg("-kernel")
        .arg(elf)
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-arm (install it: apt-get install qemu-system-arm)")?;
    let mut qemu = Qemu(child);
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = qemu.0.try_wait() {
            bail!("qemu exited early ({status})");
        }
        match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        {
            Ok(s) => return Ok((qemu, s)),
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e).context("cannot reach QEMU's UART socket"),
        }
    }
}

fn list() -> anyhow::Result<()> {
    let ports = device::list_ports().context("cannot list serial ports")?;
    if ports.is_empty() {
        println!("no serial ports found");
    }
    for p in ports {
        let what = match p.port_type {
            serialport::SerialPortType::UsbPort(u) => {
                let mut s = format!("USB {:04x}:{:04x}", u.vid, u.pid);
                for part in [u.manufacturer, u.product, u.serial_number]
                    .into_iter()
                    .flatten()
                {
                    s += " ";
                    s += &part;
                }
                s
            }
            serialport::SerialPortType::PciPort => "PCI".into(),
            serialport::SerialPortType::BluetoothPort => "Bluetooth".into(),
            serialport::SerialPortType::Unknown => "serial".into(),
        };
        println!("{}\t{what}", p.port_name);
    }
    Ok(())
}

pub(super) fn device(a: DeviceArgs, progress: Progress) -> anyhow::Result<()> {
    if a.list {
        return list();
    }
    anyhow::ensure!(a.images >= 1, "--images must be at least 1");
    let test = a.data.load(Split::Test)?.take(a.images);
    let host_model = match &a.model {
        Some(path) => match super::load_any_model(path)? {
            super::AnyModel::Int8(bytes) => Some(bytes),
            super::AnyModel::F32(_) => bail!(
                "{}: an f32 model, but devices run int8 models (`spartan quantize` makes one)",
                path.display()
            ),
        },
        None => None,
    };
    let host = host_model.as_deref().map(Int8Runner::load).transpose()?;
    let run = Run {
        test: &test,
        host: host.as_ref(),
        timeout: a.timeout,
        attempts: a.retries + 1,
        progress,
    };
    let report = match (&a.qemu, &a.serial) {
        (Some(elf), _) => {
            let (_qemu, stream) = boot_qemu(elf)?;
            stream.set_nodelay(true)?;
            run.on(stream)?
        }
        (None, Some(path)) => run.on(SerialLink::open(path, a.baud)?)?,
        (None, None) => bail!("give --serial PORT, --qemu ELF or --list"),
    };
    println!("{report}");
    Ok(())
}

/// One measurement run over some link.
struct Run<'a> {
    test: &'a data::Dataset,
    host: Option<&'a Int8Runner<'a>>,
    timeout: Duration,
    attempts: u32,
    progress: Progress,
}

impl Run<'_> {
    fn on<L: Link>(&self, link: L) -> anyhow::Result<String> {
        let mut client = Client::new(link);
        client.timeout = self.timeout;
        client.attempts = self.attempts;
        let info = client
            .handshake()
            .context("the device does not answer (is it powered, flashed with spartan-fw, on this port and baud rate?)")?;
        self.check(&info)?;
        let test = self.test;
        let bar = self.progress.bar(test.len() as u64, "device");
        let started = Instant::now();
        let (mut correct, mut differing, mut host_correct) = (0usize, 0usize, 0usize);
        for i in 0..test.len() {
            let reply = client.classify(test.image(i)).with_context(|| {
                format!("image {i} (after {} answered)", client.stats().answered)
            })?;
            correct += usize::from(usize::from(reply.class) == usize::from(test.labels[i]));
            if let Some(h) = self.host {
                let (hc, hl) = h.run(test.image(i), 1);
                host_correct += usize::from(hc[0] == test.labels[i]);
                differing += hl.iter().zip(&reply.logits).filter(|(a, b)| a != b).count();
                differing += hl.len().abs_diff(reply.logits.len());
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        let n = test.len();
        let mut report = format!(
            "device accuracy {:.2}% ({correct}/{n}) in {secs:.1} s ({:.1} images/s)\nlink: {}",
            correct as f64 * 100.0 / n as f64,
            n as f64 / secs,
            client.stats()
        );
        if self.host.is_some() {
            report += &format!(
                "\nhost int8 accuracy on the same images {host_correct}/{n}; logits differing from the host: {differing} of {}",
                n * usize::from(info.classes)
            );
            anyhow::ensure!(
                differing == 0 && host_correct == correct,
                "{report}\nthe device disagrees with the host"
            );
        }
        Ok(report)
    }

    /// Prints what the device runs and checks it against --model and the data.
    fn check(&self, info: &Info) -> anyhow::Result<()> {
        eprintln!(
            "device: model {:#010x}, {} parameters, input {}×{}×{}, {} classes, arena {} bytes",
            info.model_crc,
            info.parameters,
            info.input.height,
            info.input.width,
            info.input.channels,
            info.classes,
            info.arena_bytes
        );
        if let Some(h) = self.host {
            anyhow::ensure!(
                h.model.crc() == info.model_crc,
                "the device runs model {:#010x}, --model is {:#010x}",
                info.model_crc,
                h.model.crc()
            );
        }
        self.test.check_shape(info.input)?;
        Ok(())
    }
}
