//! `spartan device`: stream test images to a device and measure it end to end.

use super::DataArgs;
use crate::device::Client;
use anyhow::{bail, Context};
use spartan_train::data;
use spartan_train::int8::Int8Runner;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `spartan device`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("link").required(true).args(["serial", "qemu"])))]
pub struct DeviceArgs {
    /// A serial device or pty already configured (e.g. `stty -F PATH raw 115200`).
    #[arg(long, value_name = "PATH")]
    pub serial: Option<PathBuf>,
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
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
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
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return Ok((qemu, s)),
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e).context("cannot reach QEMU's UART socket"),
        }
    }
}

/// Asks for the model info until the device answers (bytes sent before the firmware
/// listens are lost, so the first requests may go unanswered).
fn handshake<S: std::io::Read + std::io::Write>(
    client: &mut Client<S>,
) -> anyhow::Result<spartan_mcu::driver::Info> {
    let patient = client.timeout;
    client.timeout = Duration::from_millis(500);
    let mut last = None;
    for _ in 0..20 {
        match client.info() {
            Ok(info) => {
                client.timeout = patient;
                client.drain(Duration::from_millis(300))?;
                return Ok(info);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no answer")))
    .context("the device does not answer the info request")
}

pub(super) fn device(a: DeviceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.images >= 1, "--images must be at least 1");
    let splits = data::load(a.data.data.as_deref())?;
    let test = splits.test.take(a.images);
    let host_model = a
        .model
        .as_ref()
        .map(std::fs::read)
        .transpose()
        .context("cannot read --model")?;
    let host = host_model.as_deref().map(Int8Runner::load).transpose()?;
    let (_qemu, report) = match (&a.qemu, &a.serial) {
        (Some(elf), _) => {
            let (qemu, stream) = boot_qemu(elf)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_millis(20)))?;
            (
                Some(qemu),
                run(Client::new(stream), &test, host.as_ref(), a.timeout)?,
            )
        }
        (None, Some(path)) => {
            let port = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            (
                None,
                run(Client::new(port), &test, host.as_ref(), a.timeout)?,
            )
        }
        (None, None) => bail!("give --serial PATH or --qemu ELF"),
    };
    println!("{report}");
    Ok(())
}

fn run<S: std::io::Read + std::io::Write>(
    mut client: Client<S>,
    test: &data::Dataset,
    host: Option<&Int8Runner<'_>>,
    timeout: u64,
) -> anyhow::Result<String> {
    client.timeout = Duration::from_secs(timeout.max(1));
    let info = handshake(&mut client)?;
    eprintln!(
        "device: model {:#010x}, {} parameters, input {}×{}×{}, {} classes, arena {} bytes",
        info.model_crc,
        info.parameters,
        info.input[0],
        info.input[1],
        info.input[2],
        info.classes,
        info.arena_bytes
    );
    if let Some(h) = host {
        anyhow::ensure!(
            h.model.crc() == info.model_crc,
            "the device runs model {:#010x}, --model is {:#010x}",
            info.model_crc,
            h.model.crc()
        );
    }
    test.check_shape(spartan_core::spec::Shape::new(
        u16::from(info.input[0]),
        u16::from(info.input[1]),
        u16::from(info.input[2]),
    ))?;
    let bar = crate::progress::Progress::default().bar(test.len() as u64, "device");
    let started = Instant::now();
    let (mut correct, mut differing, mut host_correct) = (0usize, 0usize, 0usize);
    for i in 0..test.len() {
        let (class, logits) = client
            .classify(test.image(i))
            .with_context(|| format!("image {i}"))?;
        correct += usize::from(class == test.labels[i]);
        if let Some(h) = host {
            let (hc, hl) = h.run(test.image(i), 1);
            host_correct += usize::from(hc[0] == test.labels[i]);
            differing += hl.iter().zip(&logits).filter(|(a, b)| a != b).count();
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let n = test.len();
    let mut report = format!(
        "device accuracy {:.2}% ({correct}/{n}) in {secs:.1} s ({:.1} images/s)",
        correct as f64 * 100.0 / n as f64,
        n as f64 / secs
    );
    if host.is_some() {
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
