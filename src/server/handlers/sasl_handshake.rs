//! SaslHandshake: no listener speaks SASL yet, so every connection is PLAINTEXT and already
//! authenticated. Kafka answers a handshake there with ILLEGAL_SASL_STATE and no mechanisms,
//! so a client configured for SASL can say what is wrong ("the broker does not speak SASL
//! here") instead of seeing the connection drop. When SASL listeners come, this is where a
//! connection in `ConnState::Authenticating` picks its mechanism.

use super::RequestContext;

use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

use crate::error::ErrorCode;

pub async fn handle(ctx: &RequestContext, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    tracing::debug!(
        client = %ctx.client_addr,
        mechanism = %req.mechanism.as_str(),
        "SaslHandshake on a PLAINTEXT listener: ILLEGAL_SASL_STATE"
    );
    SaslHandshakeResponse::default()
        .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
        .with_mechanisms(Vec::new())
}
