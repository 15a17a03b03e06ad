//! `GET /api/v1/categories` (the whole tree) and `GET /api/v1/categories/{id}` (one category
//! with its subtree). Categories are few and public: read from the read model on each request,
//! not cached.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use http_api::openapi::{NotFound, ServiceUnavailable};
use http_api::problem::ApiError;
use read_model::categories;
use uuid::Uuid;

use crate::app::AppState;
use crate::views::{self, CategoryNode};

/// The category tree.
///
/// The top-level categories, each with its children nested (by name), and in each node the
/// number of published products listed directly in it. A category whose parent the read model
/// does not hold (yet) is listed at the top level, with its `parent_id`.
#[utoipa::path(
    get,
    path = "/api/v1/categories",
    tag = "categories",
    operation_id = "listCategories",
    responses(
        (status = 200, description = "The top-level categories, each with its subtree", body = Vec<CategoryNode>),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn tree(State(state): State<AppState>) -> Result<Json<Vec<CategoryNode>>, ApiError> {
    Ok(Json(load(&state).await?))
}

/// Get a category.
///
/// The category with its subtree, as in the tree. Unknown, deleted and malformed ids are 404.
#[utoipa::path(
    get,
    path = "/api/v1/categories/{id}",
    tag = "categories",
    operation_id = "getCategory",
    params(("id" = Uuid, Path, description = "The category's id (anything else is 404)")),
    responses(
        (status = 200, description = "The category and its subtree", body = CategoryNode),
        (status = 404, response = NotFound),
        (status = 503, response = ServiceUnavailable),
    )
)]
pub async fn detail(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CategoryNode>, ApiError> {
    let id: Uuid = path.ok().and_then(|Path(raw)| raw.parse().ok()).ok_or(ApiError::NotFound("category"))?;
    let node = views::find(load(&state).await?, id).ok_or(ApiError::NotFound("category"))?;
    Ok(Json(node))
}

async fn load(state: &AppState) -> Result<Vec<CategoryNode>, ApiError> {
    // One snapshot, so counts and categories agree.
    let mut transaction = state.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *transaction).await?;
    let live = categories::all_live(&mut *transaction).await?;
    let counts = categories::product_counts(&mut *transaction).await?;
    transaction.commit().await?;
    Ok(views::tree(live, &counts))
}
