//! `losskit serve`: host a local device for `--device remote:ws://HOST:PORT` (burn's remote
//! backend over WebSocket), for training from another process or machine.

use anyhow::Result;

/// Serves `device` on `bind:port` until Ctrl-C; port 0 picks a free port. Prints the address
/// to stderr once listening.
pub fn run(bind: &str, port: u16, device: Option<&str>) -> Result<String> {
    #[cfg(feature = "remote-server")]
    {
        use anyhow::Context;
        let name = device.unwrap_or("cpu");
        if name.trim().starts_with("remote:") {
            anyhow::bail!("--device: a server hosts a local device, not `{name}`");
        }
        let local = crate::commands::device_from_flag(Some(name))?;
        let listener = std::net::TcpListener::bind((bind, port))
            .with_context(|| format!("cannot listen on {bind}:{port}"))?;
        let address = listener
            .local_addr()
            .context("cannot read the listening address")?;
        tracing::info!(
            "serving {} at ws://{address}; train with --device remote:ws://{address} (Ctrl-C stops)",
            losskit_core::devices::describe(name)?
        );
        burn::server::RemoteServer::new([local])
            .serve(burn::server::WebSocketTransport::from_listener(listener))
            .map_err(|error| anyhow::anyhow!("the server stopped: {error}"))?;
        Ok("losskit: server stopped".into())
    }
    #[cfg(not(feature = "remote-server"))]
    {
        let _ = (bind, port, device);
        anyhow::bail!(
            "`losskit serve` needs the remote server, which is not compiled into this build; rebuild with `--features remote-server`"
        )
    }
}
