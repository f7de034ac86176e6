//! Messages with file descriptors over a unix stream socket (`SCM_RIGHTS`):
//! how the helper inside the namespaces hands kdev the sockets it made
//! there. A socket belongs to the network namespace it was made in, whoever
//! holds it later.
//!
//! A message is a tag byte, a big-endian u16 length and that many bytes of
//! text; its descriptors ride on the first byte.

use std::io::{IoSlice, IoSliceMut, Read as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// Sends one message with `fds`.
pub fn send(
    stream: &UnixStream,
    tag: u8,
    text: &str,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    assert!(
        fds.len() <= MAX_FDS,
        "at most {MAX_FDS} descriptors a message"
    );
    let text = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    let mut head = vec![tag];
    head.extend_from_slice(&(text.len() as u16).to_be_bytes());
    head.extend_from_slice(text);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("descriptors do not fit the message"));
    }
    let mut sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(&head)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // The descriptors went with the first bytes; the rest is plain data.
    while sent < head.len() {
        sent += rustix::net::send(stream, &head[sent..], SendFlags::NOSIGNAL)?;
    }
    Ok(())
}

/// One received message: its tag, text and descriptors.
#[derive(Debug)]
pub struct Message {
    pub tag: u8,
    pub text: String,
    pub fds: Vec<OwnedFd>,
}

/// Receives one message; `Ok(None)` when the peer closed the socket.
pub fn recv(stream: &UnixStream) -> std::io::Result<Option<Message>> {
    let mut head = [0u8; 3];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        stream.as_fd(),
        &mut [IoSliceMut::new(&mut head)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    let mut reader = stream;
    if got.bytes < head.len() {
        reader.read_exact(&mut head[got.bytes..])?;
    }
    let len = u16::from_be_bytes([head[1], head[2]]) as usize;
    let mut text = vec![0u8; len];
    reader.read_exact(&mut text)?;
    Ok(Some(Message {
        tag: head[0],
        text: String::from_utf8_lossy(&text).into_owned(),
        fds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_text_and_descriptors() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let (keep, _other) = UnixStream::pair().expect("socket pair");
        send(&a, b'S', "hello", &[keep.as_fd()]).expect("send");
        send(&a, b'E', "", &[]).expect("send");
        let first = recv(&b).expect("recv").expect("a message");
        assert_eq!(
            (first.tag, first.text.as_str(), first.fds.len()),
            (b'S', "hello", 1)
        );
        let second = recv(&b).expect("recv").expect("a message");
        assert_eq!(
            (second.tag, second.text.as_str(), second.fds.len()),
            (b'E', "", 0)
        );
        drop(a);
        assert!(recv(&b).expect("recv").is_none());
    }
}
