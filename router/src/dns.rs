//! The authoritative DNS side: A and AAAA for the CDN's name answer with the chosen edge, at a
//! short TTL, for the client's subnet (EDNS Client Subnet) when the resolver sends one.
//! Names under the zone that are not the CDN's name are NXDOMAIN; names outside it REFUSED.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::state::Router;

/// Largest UDP answer advertised (the DNS flag day's safe size).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Answers for one name.
pub struct DnsRouter {
    router: Arc<Router>,
    name: Name,
    lower: LowerName,
    ttl: u32,
    soa: Record,
}

impl DnsRouter {
    /// Answers for `name` (the CDN's host name) with records living `ttl_secs`.
    pub fn new(router: Arc<Router>, name: &str, ttl_secs: u32) -> Result<Self, String> {
        let mut name = Name::from_ascii(name).map_err(|e| format!("router.dns_name: {e}"))?;
        name.set_fqdn(true);
        let name = name.to_lowercase();
        let host = |label: &str| {
            Name::from_ascii(label)
                .and_then(|l| l.append_domain(&name))
                .map_err(|e| format!("router.dns_name: {e}"))
        };
        let serial = u32::try_from(cascade_service::clock::now_ms() / 1000).unwrap_or(1);
        let soa = Record::from_rdata(
            name.clone(),
            ttl_secs,
            RData::SOA(SOA::new(
                host("ns")?,
                host("hostmaster")?,
                serial,
                3600,
                600,
                86_400,
                ttl_secs,
            )),
        );
        Ok(Self {
            router,
            lower: LowerName::from(name.clone()),
            name,
            ttl: ttl_secs,
            soa,
        })
    }

    /// The client a query is for: the ECS subnet's address when given, else the source.
    fn client(request: &Request) -> (IpAddr, Option<ClientSubnet>) {
        let subnet = request
            .edns
            .as_ref()
            .and_then(|edns| match edns.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
                _ => None,
            });
        match subnet {
            Some(s) if s.source_prefix() > 0 => (s.addr(), Some(s)),
            _ => (request.src().ip(), subnet),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsRouter {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        let (client, subnet) = Self::client(request);
        // An answer carries EDNS when the query did, with the subnet scope we used.
        let edns = request.edns.as_ref().map(|_| {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            if let Some(s) = subnet {
                edns.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(
                        s.addr(),
                        s.source_prefix(),
                        s.source_prefix(),
                    )));
            }
            edns
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = edns.as_ref() {
            builder.edns(edns);
        }
        let refuse = |code: ResponseCode| {
            let mut m = metadata;
            m.response_code = code;
            m
        };
        if request.metadata.op_code != OpCode::Query {
            let response = builder.build_no_records(refuse(ResponseCode::NotImp));
            return send(&mut response_handle, response, &metadata).await;
        }
        let Ok(info) = request.request_info() else {
            self.router.metrics.bad_request("dns");
            let response = builder.build_no_records(refuse(ResponseCode::FormErr));
            return send(&mut response_handle, response, &metadata).await;
        };
        let qname = info.query.name();
        if !self.lower.zone_of(qname) {
            let response = builder.build_no_records(refuse(ResponseCode::Refused));
            return send(&mut response_handle, response, &metadata).await;
        }
        if *qname != self.lower {
            let response = builder.build(refuse(ResponseCode::NXDomain), [], [], [&self.soa], []);
            return send(&mut response_handle, response, &metadata).await;
        }
        let qtype = info.query.query_type();
        let answer: Option<Record> = match qtype {
            RecordType::SOA => Some(self.soa.clone()),
            RecordType::A | RecordType::AAAA | RecordType::ANY => {
                let (located, decision) = self.router.decide(client, "dns");
                match decision {
                    Ok(d) => {
                        self.router.metrics.decided(
                            "dns",
                            located.source(),
                            started.elapsed().as_secs_f64(),
                        );
                        let edge = &self.router.topology.pops[d.pop].edges[d.edge];
                        match (edge.address, qtype) {
                            (Some(IpAddr::V4(v4)), RecordType::A | RecordType::ANY) => Some(
                                Record::from_rdata(self.name.clone(), self.ttl, RData::A(A(v4))),
                            ),
                            (Some(IpAddr::V6(v6)), RecordType::AAAA | RecordType::ANY) => {
                                Some(Record::from_rdata(
                                    self.name.clone(),
                                    self.ttl,
                                    RData::AAAA(AAAA(v6)),
                                ))
                            }
                            _ => None,
                        }
                    }
                    Err(_) => {
                        self.router.metrics.no_route("dns");
                        let response = builder.build_no_records(refuse(ResponseCode::ServFail));
                        return send(&mut response_handle, response, &metadata).await;
                    }
                }
            }
            _ => None,
        };
        match answer.as_ref() {
            Some(record) => {
                let response = builder.build(metadata, [record], [], [], []);
                send(&mut response_handle, response, &metadata).await
            }
            // The name exists without records of this type: NODATA, with the SOA for caching.
            None => {
                let response = builder.build(metadata, [], [], [&self.soa], []);
                send(&mut response_handle, response, &metadata).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: &Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, "cannot send a DNS answer");
            let mut m = *metadata;
            m.response_code = ResponseCode::ServFail;
            ResponseInfo::from(hickory_server::proto::op::Header {
                metadata: m,
                counts: Default::default(),
            })
        }
    }
}
