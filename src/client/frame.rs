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
    read_frame_by_kind(stream, max, |_| max).await
}

/// Memory for a frame is taken as its bytes arrive, this much at a time: a peer that announces
/// a large frame and sends nothing costs nothing.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// As `read_frame`, with the limit chosen by the frame's first byte (a postcard enum's variant,
/// for instance): a kind of message that is always small is refused with its first chunk (at
/// most 64 KiB read), when it claims to be large. A frame over `ceiling` is refused before any
/// of it is read.
pub async fn read_frame_by_kind(
    stream: &mut RecvStream,
    ceiling: usize,
    max_for: impl Fn(u8) -> usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FrameError::Transport(e.to_string())),
    }
    let bytes = u32::from_le_bytes(len) as usize;
    if bytes > ceiling {
        return Err(FrameError::TooLarge {
            bytes,
            max: ceiling,
        });
    }
    let mut buf = Vec::with_capacity(bytes.min(READ_CHUNK_BYTES));
    let mut kind_checked = false;
    while buf.len() < bytes {
        let want = (bytes - buf.len()).min(READ_CHUNK_BYTES);
        match stream.read_chunk(want, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Transport(format!(
                    "the stream ended {} bytes into a frame of {bytes}",
                    buf.len()
                )))
            }
            Err(e) => return Err(FrameError::Transport(e.to_string())),
        }
        // The first byte says what the frame is, and so how large it may be: checked with the
        // first chunk, before more memory is taken.
        if let (false, Some(&kind)) = (kind_checked, buf.first()) {
            kind_checked = true;
            let max = max_for(kind).min(ceiling);
            if bytes > max {
                return Err(FrameError::TooLarge { bytes, max });
            }
        }
    }
    Ok(Some(buf))
}
