//! The command's DNS: every datagram it sends to port 53 arrives here and
//! is asked of the cluster's DNS over TCP through the cluster dialer, so the
//! answer is the one a pod gets (Services, headless pods' names,
//! ExternalName, the zones the cluster's DNS forwards to).
//!
//! A query that is not DNS is dropped, as a server drops it. A query the
//! cluster does not answer within [`TIMEOUT`] gets SERVFAIL, so the
//! command's resolver moves on instead of waiting out its own timeouts.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Dial;

/// How long one query may take in the cluster.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest DNS message over UDP this accepts (EDNS allows 65,535; 4 KiB
/// is what resolvers offer).
const MAX_DATAGRAM: usize = 65_535;

/// Answers the command's queries until the socket fails.
pub async fn serve(
    socket: Arc<tokio::net::UdpSocket>,
    cluster: Arc<dyn Dial>,
    nameserver: SocketAddrV4,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                tracing::debug!(error = %err, "the network view's DNS socket failed");
                return;
            }
        };
        let query = buf[..len].to_vec();
        let Some(servfail) = servfail_for(&query) else {
            continue;
        };
        let socket = socket.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(
                TIMEOUT,
                exchange(&*cluster, nameserver, &query),
            )
            .await
            {
                Ok(Ok(answer)) => answer,
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "a DNS query through the cluster failed");
                    servfail
                }
                Err(_) => servfail,
            };
            let _ = socket.send_to(&answer, peer).await;
        });
    }
}

/// One query over DNS's TCP framing (a two-byte length before each message).
pub async fn exchange(
    cluster: &dyn Dial,
    nameserver: SocketAddrV4,
    query: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut stream = cluster.dial(nameserver).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// The SERVFAIL answer to `query`, or `None` when `query` is not a DNS query.
pub fn servfail_for(query: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    if query.metadata.message_type != hickory_proto::op::MessageType::Query {
        return None;
    }
    let mut answer = Message::error_msg(
        query.metadata.id,
        query.metadata.op_code,
        ResponseCode::ServFail,
    );
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.queries = query.queries;
    answer.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use proptest::prelude::*;

    fn query(name: &str) -> Vec<u8> {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message
            .queries
            .push(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message.to_vec().unwrap()
    }

    #[test]
    fn servfail_answers_the_query_it_was_made_for() {
        let answer =
            Message::from_vec(&servfail_for(&query("db.shop.svc.cluster.local.")).unwrap())
                .unwrap();
        assert_eq!(answer.metadata.id, 0x1234);
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(answer.queries.len(), 1);
        assert_eq!(
            answer.queries[0].name().to_ascii(),
            "db.shop.svc.cluster.local."
        );
    }

    #[test]
    fn what_is_not_a_query_gets_no_answer() {
        assert!(servfail_for(b"GET / HTTP/1.1\r\n").is_none());
        let answer = servfail_for(&query("a.")).unwrap();
        assert!(servfail_for(&answer).is_none(), "an answer is not answered");
    }

    proptest! {
        #[test]
        fn any_datagram_gets_an_answer_or_none_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = servfail_for(&bytes);
        }
    }
}
