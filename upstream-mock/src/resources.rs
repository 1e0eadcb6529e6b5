//! The resource endpoints: items, products and categories.
//!
//! This is the Flask-JWT-Extended tutorial's resource service, minus any
//! authentication: access decisions belong to the gateway, and the mock only
//! *reads* the identity it was handed (to trim `/items` for anonymous
//! callers and to record `created_by`). Items and products have the same
//! shape, so their handlers are shared and generic over [`Collection`].

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::store::{Category, Item, Store};
use crate::AppState;

/// One of the two item-shaped collections.
pub(crate) trait Collection: Send + Sync + 'static {
    /// Capitalised noun for messages ("Item").
    const TITLE: &'static str;
    /// Error code when the name is unknown.
    const NOT_FOUND: &'static str;
    /// Error code when the name is already taken.
    const EXISTS: &'static str;

    fn map(store: &mut Store) -> &mut BTreeMap<String, Item>;
}

/// Marker for `/item/{name}`.
pub(crate) struct Items;
/// Marker for `/product/{name}`.
pub(crate) struct Products;

impl Collection for Items {
    const TITLE: &'static str = "Item";
    const NOT_FOUND: &'static str = "item_not_found";
    const EXISTS: &'static str = "item_exists";

    fn map(store: &mut Store) -> &mut BTreeMap<String, Item> {
        &mut store.items
    }
}

impl Collection for Products {
    const TITLE: &'static str = "Product";
    const NOT_FOUND: &'static str = "product_not_found";
    const EXISTS: &'static str = "product_exists";

    fn map(store: &mut Store) -> &mut BTreeMap<String, Item> {
        &mut store.products
    }
}

/// The body `POST /item/{name}` and `POST /product/{name}` accept.
#[derive(Debug, Deserialize)]
struct NewItem {
    price: f64,
    #[serde(default)]
    category: Option<String>,
}

/// The answer to a successful create: the item plus who created it.
#[derive(Debug, Serialize)]
pub(crate) struct Created {
    #[serde(flatten)]
    item: Item,
    created_by: Option<String>,
}

/// Turns a path rejection (e.g. bad percent-encoding) into the JSON error
/// shape instead of axum's plain-text one.
fn name_from(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(name)) => Ok(name),
        Err(rejection) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", rejection.body_text())),
    }
}

fn parse_new_item(body: Result<Bytes, BytesRejection>) -> Result<NewItem, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "invalid_body" };
        ApiError::new(status, code, rejection.body_text())
    })?;
    let explain = |err: &dyn std::fmt::Display| {
        ApiError::invalid_body(format!(
            "Expected a JSON object with a numeric \"price\" and an optional \"category\" string: {err}."
        ))
    };
    let value: Value = serde_json::from_slice(&body).map_err(|err| explain(&err))?;
    // serde would happily read a struct from an array (`[12]`): insist on an
    // object so only the documented shape is accepted.
    if !value.is_object() {
        return Err(explain(&"the body is not an object"));
    }
    serde_json::from_value(value).map_err(|err| explain(&err))
}

fn not_found<C: Collection>() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, C::NOT_FOUND, format!("{} not found.", C::TITLE))
}

/// `GET /item/{name}`, `GET /product/{name}`.
pub(crate) async fn get_one<C: Collection>(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Item>, ApiError> {
    let name = name_from(path)?;
    let mut store = app.store.lock();
    C::map(&mut store).get(&name).cloned().map(Json).ok_or_else(not_found::<C>)
}

/// `POST /item/{name}`, `POST /product/{name}`.
pub(crate) async fn create<C: Collection>(
    State(app): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let name = name_from(path)?;
    let mut store = app.store.lock();
    let map = C::map(&mut store);
    if map.contains_key(&name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            C::EXISTS,
            format!("{} '{name}' already exists.", C::TITLE),
        ));
    }
    let new = parse_new_item(body)?;
    let item = Item { name: name.clone(), price: new.price, category: new.category };
    map.insert(name, item.clone());
    let created_by = app.identity.user_id(&headers);
    Ok((StatusCode::CREATED, Json(Created { item, created_by })))
}

/// `DELETE /item/{name}`, `DELETE /product/{name}`.
pub(crate) async fn delete<C: Collection>(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = name_from(path)?;
    let mut store = app.store.lock();
    match C::map(&mut store).remove(&name) {
        Some(_) => Ok(Json(json!({ "message": format!("{} deleted.", C::TITLE) }))),
        None => Err(not_found::<C>()),
    }
}

/// `GET /items`: the full list for identified callers, only the names (and
/// a nudge to log in) for anonymous ones.
pub(crate) async fn list_items(State(app): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let store = app.store.lock();
    if app.identity.user_id(&headers).is_some() {
        let items: Vec<&Item> = store.items.values().collect();
        Json(json!({ "items": items }))
    } else {
        let names: Vec<&String> = store.items.keys().collect();
        Json(json!({
            "items": names,
            "message": "More data available if you log in.",
        }))
    }
}

/// `GET /products`: always the full list.
pub(crate) async fn list_products(State(app): State<AppState>) -> Json<Value> {
    let store = app.store.lock();
    let products: Vec<&Item> = store.products.values().collect();
    Json(json!({ "products": products }))
}

fn category_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "category_not_found", "Category not found.")
}

/// `GET /category/{name}`.
pub(crate) async fn get_category(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Category>, ApiError> {
    let name = name_from(path)?;
    let store = app.store.lock();
    if store.categories.contains(&name) {
        Ok(Json(store.category(&name)))
    } else {
        Err(category_not_found())
    }
}

/// `POST /category/{name}` (any body is ignored).
pub(crate) async fn create_category(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Category>), ApiError> {
    let name = name_from(path)?;
    let mut store = app.store.lock();
    if !store.categories.insert(name.clone()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "category_exists",
            format!("Category '{name}' already exists."),
        ));
    }
    Ok((StatusCode::CREATED, Json(store.category(&name))))
}

/// `DELETE /category/{name}`. Items filed under it keep their `category`
/// field; they simply no longer belong to a listed category.
pub(crate) async fn delete_category(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = name_from(path)?;
    let mut store = app.store.lock();
    if store.categories.remove(&name) {
        Ok(Json(json!({ "message": "Category deleted." })))
    } else {
        Err(category_not_found())
    }
}

/// `GET /categories`.
pub(crate) async fn list_categories(State(app): State<AppState>) -> Json<Value> {
    let store = app.store.lock();
    let categories: Vec<Category> = store.categories.iter().map(|name| store.category(name)).collect();
    Json(json!({ "categories": categories }))
}
