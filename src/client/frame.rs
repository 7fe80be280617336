//! Length-prefixed frames: `[length u32 LE][bytes]`, one request and one response per QUIC
//! bidirectional stream, or a sequence of frames on a long-lived stream.

use quinn::{RecvStream, SendStream};

#[derive(Debug)]
pub enum FrameError {
    /// The peer announced a frame larger than the limit for this stream.
    TooLarge { bytes: usize, max: usize },
    /// The stream or connection failed.
    Transport(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { bytes, max } => {
                write!(f, "frame of {bytes} bytes exceeds the limit of {max}")
            }
            FrameError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

pub async fn write_frame(stream: &mut SendStream, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        bytes: payload.len(),
        max: u32::MAX as usize,
    })?;
    stream
        .write_all(&len.to_le_bytes())
        .await
        .map_err(|e| FrameError::Transport(e.to_string()))?;
    stream
        .write_all(payload)
        .await
        .map_err(|e| FrameError::Transport(e.to_string()))
}

/// The next frame, or `None` when the peer finished the stream cleanly between frames.
pub async fn read_frame(
    stream: &mut RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FrameError::Transport(e.to_string())),
    }
    let bytes = u32::from_le_bytes(len) as usize;
    if bytes > max {
        return Err(FrameError::TooLarge { bytes, max });
    }
    let mut buf = vec![0u8; bytes];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| FrameError::Transport(e.to_string()))?;
    Ok(Some(buf))
}
