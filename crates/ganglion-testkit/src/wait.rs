use std::{future::Future, time::Duration};

/// Polls `check` until it returns `Some`, or fails after `deadline`.
///
/// `check` is expected to do its own waiting (a long-poll `/sync`, a request); between
/// attempts that return `None` at once there is a short pause so a fast loop does not spin.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let attempts = async {
        loop {
            if let Some(value) = check().await? {
                return anyhow::Ok(value);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    match tokio::time::timeout(deadline, attempts).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("timed out after {deadline:?} waiting for {what}"),
    }
}
