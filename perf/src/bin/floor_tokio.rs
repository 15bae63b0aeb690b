//! `floor-tokio`: the reference receiver on tokio `current_thread` (one thread, pinned): read,
//! answer every complete frame of the read with [`mllpd_perf::floor::answer`], one write.

use clap::Parser;
use mllpd_perf::floor;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reference MLLP receiver on tokio current_thread.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:2576")]
    listen: SocketAddr,
    /// CPU to pin the one thread to.
    #[arg(long)]
    cpu: Option<usize>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if let Some(cpu) = args.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                // A failed connection ends only itself.
                let _ = serve(stream).await;
            });
        }
    })
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let used = floor::answer(&buf[..filled], &mut out);
        buf.copy_within(used..filled, 0);
        filled -= used;
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}
