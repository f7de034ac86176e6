//! The command's DNS: every datagram it sends to port 53 arrives here and
//! is asked of the cluster's DNS over TCP through the cluster dialer, so the
//! answer is the one a pod gets (Services, headless pods' names,
//! ExternalName, the zones the cluster's DNS forwards to).
//!
//! A query that is not DNS is dropped, as a server drops it. A query the
//! cluster does not answer within [`TIMEOUT`] gets SERVFAIL, so the
//! command's resolver moves on instead of waiting out its own timeouts.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
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
    learned: Arc<RwLock<BTreeSet<Ipv4Addr>>>,
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
        let learned = learned.clone();
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(TIMEOUT, exchange(&*cluster, &query)).await {
                Ok(Ok(answer)) => {
                    let private = private_addresses(&answer);
                    if !private.is_empty()
                        && let Ok(mut learned) = learned.write()
                    {
                        learned.extend(private);
                    }
                    answer
                }
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
pub async fn exchange(cluster: &dyn Dial, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = cluster.dns().await?;
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

/// The private IPv4 addresses (RFC 1918, and 100.64.0.0/10 that some
/// clusters' pods use) an answer gives for its names.
pub fn private_addresses(answer: &[u8]) -> Vec<Ipv4Addr> {
    let Ok(answer) = Message::from_vec(answer) else {
        return Vec::new();
    };
    answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            hickory_proto::rr::RData::A(a) => Some(a.0),
            _ => None,
        })
        .filter(|ip| ip.is_private() || (ip.octets()[0] == 100 && ip.octets()[1] & 0xc0 == 64))
        .collect()
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
    fn private_answers_are_learned_and_public_ones_are_not() {
        let mut answer = Message::response(1, OpCode::Query);
        for ip in [[10, 244, 0, 7], [93, 184, 216, 34], [100, 64, 1, 2]] {
            answer.answers.push(hickory_proto::rr::Record::from_rdata(
                Name::from_ascii("kafka-0.kafka.shop.svc.cluster.local.").unwrap(),
                5,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(Ipv4Addr::from(ip))),
            ));
        }
        assert_eq!(
            private_addresses(&answer.to_vec().unwrap()),
            vec![Ipv4Addr::new(10, 244, 0, 7), Ipv4Addr::new(100, 64, 1, 2)]
        );
        assert!(private_addresses(b"junk").is_empty());
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
            let _ = private_addresses(&bytes);
        }
    }
}
