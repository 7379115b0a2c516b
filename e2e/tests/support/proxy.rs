//! A TCP proxy a test can cut: services reach Postgres through it, and `cut` makes the database
//! unreachable for them (open connections reset, new ones refused) until `restore`, without touching
//! the shared Postgres server itself.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

#[derive(Debug)]
pub(crate) struct CuttableProxy {
    pub(crate) addr: SocketAddr,
    up: watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (up, watching) = watch::channel(true);
        runtime.spawn(serve(listener, upstream, watching));
        Self {
            addr,
            up,
            _runtime: runtime,
        }
    }

    /// Resets every open connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards again.
    pub(crate) fn restore(&self) {
        self.up.send_replace(true);
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, up: watch::Receiver<bool>) {
    let open = Arc::new(Mutex::new(JoinSet::new()));
    let mut cuts = up.clone();
    {
        // On every cut, drop the open connections.
        let open = open.clone();
        tokio::spawn(async move {
            while cuts.changed().await.is_ok() {
                if !*cuts.borrow() {
                    open.lock().expect("connections").abort_all();
                }
            }
        });
    }
    while let Ok((mut client, _)) = listener.accept().await {
        if !*up.borrow() {
            drop(client);
            continue;
        }
        open.lock().expect("connections").spawn(async move {
            if let Ok(mut server) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}
