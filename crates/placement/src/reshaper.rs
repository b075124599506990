//! `POST /reshaper` (1.30): replaces inventories and allocations of several providers in
//! one atomic step (moving VGPU inventory from a root to child providers).

use std::sync::Arc;

use axum::Router;

use crate::AppState;

/// Routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
