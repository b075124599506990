//! The dashboard's errors and how each is shown to a person.
//!
//! An API refusal is shown as a page with the API's own message (escaped like every
//! other string): the dashboard never second-guesses policy, it reports what the API said.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

/// What went wrong while serving a page.
#[derive(Debug, thiserror::Error)]
pub enum DashError {
    /// An API answered with a fault; `message` is the fault's message.
    #[error("{message}")]
    Api {
        /// The API's status.
        status: StatusCode,
        /// The API's message.
        message: String,
    },
    /// No session (or it ended with its token): the person logs in again.
    #[error("login required")]
    LoginRequired {
        /// Where the login page sends the person afterwards (the dashboard prefix).
        login_url: String,
    },
    /// A state-changing request without the session's CSRF token.
    #[error("The form was not accepted: its security token is missing or does not match this session. Reload the page and try again.")]
    Csrf,
    /// Input the dashboard checks itself before calling an API.
    #[error("{0}")]
    BadInput(String),
}

impl DashError {
    /// The HTTP status this error is served with.
    pub fn status(&self) -> StatusCode {
        match self {
            DashError::Api { status, .. } => *status,
            DashError::LoginRequired { .. } => StatusCode::SEE_OTHER,
            DashError::Csrf => StatusCode::FORBIDDEN,
            DashError::BadInput(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        if let DashError::LoginRequired { login_url } = &self {
            return (StatusCode::SEE_OTHER, [(header::LOCATION, login_url.clone())]).into_response();
        }
        let status = self.status();
        let title = match status {
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            s if s.is_client_error() => "Request refused",
            _ => "Service error",
        };
        let body = html! {
            (maud::DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "Stratus - " (title) } }
                body {
                    main.error {
                        h1 { (title) }
                        p.message { (self.to_string()) }
                        p { "Go back to the previous page to try again." }
                    }
                }
            }
        };
        (status, body).into_response()
    }
}

/// Result of a dashboard handler.
pub type Result<T, E = DashError> = std::result::Result<T, E>;
