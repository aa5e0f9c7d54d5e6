//! Media endpoints: upload and download of encrypted attachments. The rules live in
//! [`crate::media`].

use axum::response::{IntoResponse, Response};
use parley_client_api::media::{DownloadMedia, MediaPath, UploadMedia};

use crate::accounts::Authed;
use crate::api::errors::ApiResult;
use crate::api::route::{RawRequest, Routes};
use crate::media;
use crate::state::AppState;

/// The media endpoints.
pub fn routes() -> Routes {
    Routes::new()
        .serve_bytes::<UploadMedia, _, _>(upload)
        .serve_bytes::<DownloadMedia, _, _>(download)
}

async fn upload(state: AppState, auth: Authed, _: (), req: RawRequest) -> ApiResult<Response> {
    let uploaded = media::upload(&state, &auth.user_id, &req.headers, req.body).await?;
    Ok(axum::Json(uploaded).into_response())
}

async fn download(
    state: AppState,
    _: Authed,
    path: MediaPath,
    req: RawRequest,
) -> ApiResult<Response> {
    Ok(media::download(&state, &path.server_name, &path.media_id, &req.headers).await?)
}
