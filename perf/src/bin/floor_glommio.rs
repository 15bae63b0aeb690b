//! `floor-glommio`: the reference receiver on one pinned glommio executor, set up like an
//! mllpd shard (same io_memory): read, answer every complete frame of the read with
//! [`mllpd_perf::floor::answer`], one write. Whatever mllpd spends above this is its own work
//! (parsing, ACK building, bookkeeping), not the runtime's.

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use mllpd_perf::floor;
use std::net::SocketAddr;

/// Reference MLLP receiver on glommio.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (port 0 picks one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:2577")]
    listen: SocketAddr,
    /// CPU to pin the executor to (default: not pinned).
    #[arg(long)]
    cpu: Option<usize>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let placement = args.cpu.map_or(Placement::Unbound, Placement::Fixed);
    let executor = LocalExecutorBuilder::new(placement)
        .name("floor-glommio")
        .io_memory(1 << 20)
        .make()
        .map_err(|e| format!("executor: {e}"))?;
    executor.run(async move {
        let listener = TcpListener::bind(args.listen).map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {addr}");
        loop {
            let stream = listener
                .accept()
                .await
                .map_err(|e| format!("accept: {e}"))?;
            glommio::spawn_local(async move {
                // A failed connection ends only itself.
                let _ = serve(stream).await;
            })
            .detach();
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
