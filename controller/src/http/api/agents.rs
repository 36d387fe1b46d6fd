//! `/api/v1/agents`: the connected agents, and the operator's drains.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;
use shared::ids::AgentName;

use crate::http::{AppState, HttpError};
use crate::registry::AgentView;

pub async fn list(State(state): State<AppState>) -> Json<Vec<AgentView>> {
    Json(state.registry.snapshot())
}

pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, HttpError> {
    let name = AgentName::parse(&name).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    state
        .registry
        .get(&name)
        .map(Json)
        .ok_or_else(|| HttpError::NotFound(format!("no agent named {name} has connected")))
}

/// `POST /api/v1/agents/{name}/drain`: the agent takes no new runners; its current ones finish.
/// Kept until `/undrain`, across restarts of the agent and of the controller; an agent not
/// connected now is drained when it connects (`"connected": false`).
pub async fn drain(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), HttpError> {
    let name = AgentName::parse(&name).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let applied = state.drains.drain(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "agent": name, "draining": true, "connected": applied.sent })),
    ))
}

/// `POST /api/v1/agents/{name}/undrain`: lifts a drain set through the API (a local
/// `gha-agent drain` is lifted by `gha-agent undrain`). 409 for a connected agent older than
/// protocol 1.2, which cannot be told.
pub async fn undrain(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), HttpError> {
    let name = AgentName::parse(&name).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    let applied = state.drains.undrain(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "agent": name, "draining": false, "connected": applied.sent })),
    ))
}

impl From<crate::drain::DrainError> for HttpError {
    fn from(e: crate::drain::DrainError) -> Self {
        use crate::drain::DrainError;
        match e {
            DrainError::UnknownAgent(_) => HttpError::NotFound(e.to_string()),
            DrainError::Unsupported(_) => HttpError::Conflict(e.to_string()),
            DrainError::Send(_) => HttpError::Unavailable(e.to_string()),
            DrainError::Store(e) => HttpError::Store(e),
        }
    }
}
