//! Security's pure parts, beside `group/` and `txn/` (see `../shared/LAYERING.md`): SASL's
//! server side (`scram.rs`: SCRAM-SHA-256/512 and PLAIN against stored SCRAM credentials;
//! `oauth.rs`: OAUTHBEARER tokens checked against a JWKS) and
//! Kafka's ACL model and authorizer (`acl.rs`). No I/O: the connection loop drives the SASL
//! exchange, the metadata log stores credentials and ACLs, and handlers ask the authorizer
//! through the request context.

pub mod acl;
pub mod oauth;
pub mod scram;
