//! Graceful shutdown: the first SIGINT or SIGTERM asks every task to finish within the grace
//! period; a second signal, or the end of the grace period, stops the process at once.

use tokio::sync::watch;

/// Cloneable handle that tasks wait on to learn that the server is stopping.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

/// The sending side, held by the runtime.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A connected trigger and signal.
pub fn channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, ShutdownSignal { rx })
}

impl ShutdownTrigger {
    /// Tells every [`ShutdownSignal`] to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl ShutdownSignal {
    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone, which only happens when the runtime is exiting.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// True once shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

/// Listens for SIGINT and SIGTERM.
pub struct SignalListener {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl SignalListener {
    /// Installs the handlers; call inside a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> OsSignal {
        tokio::select! {
            _ = self.int.recv() => OsSignal::Interrupt,
            _ = self.term.recv() => OsSignal::Terminate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let (trigger, signal) = channel();
        let other = signal.clone();
        assert!(!signal.is_triggered());
        let waiter = tokio::spawn(async move { other.wait().await });
        trigger.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(signal.is_triggered());
        signal.wait().await; // already triggered: returns at once
    }
}
