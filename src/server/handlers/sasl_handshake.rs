//! SaslHandshake and SaslAuthenticate on a PLAINTEXT listener, whose connections are already
//! authenticated (`User:ANONYMOUS`): Kafka answers them there with ILLEGAL_SASL_STATE (and no
//! mechanisms), so a client configured for SASL can say what is wrong ("the broker does not
//! speak SASL here") instead of seeing the connection drop. On a SASL listener the connection
//! loop drives the exchange (`server::sasl`).

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

/// SaslAuthenticate on a PLAINTEXT listener: ILLEGAL_SASL_STATE, as Kafka answers it (on a
/// SASL listener the connection loop handles it, see `server::sasl`).
pub async fn handle_authenticate(
    ctx: &RequestContext,
    _req: kafka_protocol::messages::SaslAuthenticateRequest,
) -> kafka_protocol::messages::SaslAuthenticateResponse {
    tracing::debug!(client = %ctx.client_addr, "SaslAuthenticate on a PLAINTEXT listener: ILLEGAL_SASL_STATE");
    kafka_protocol::messages::SaslAuthenticateResponse::default()
        .with_error_code(ErrorCode::ILLEGAL_SASL_STATE.code())
        .with_error_message(Some(kafka_protocol::protocol::StrBytes::from_static_str(
            "this listener does not speak SASL",
        )))
}
