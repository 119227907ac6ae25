//! Which resource a request names (its URL path) and how (its query parameters). Pure
//! parsing; the handlers in `api` and `watch` act on the result.

use super::status::ApiError;

/// The paths the test API server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Version,
    ApiVersions,
    CoreResources,
    ApiGroups,
    Namespaces,
    Namespace(String),
    /// Pods of every namespace (`None`) or of one.
    Pods(Option<String>),
    Pod {
        namespace: String,
        name: String,
        status: bool,
    },
}

impl Route {
    pub(crate) fn parse(path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let owned = |s: &str| s.to_string();
        Ok(match segments.as_slice() {
            ["version"] => Route::Version,
            ["api"] => Route::ApiVersions,
            ["api", "v1"] => Route::CoreResources,
            ["apis"] => Route::ApiGroups,
            ["api", "v1", "namespaces"] => Route::Namespaces,
            ["api", "v1", "namespaces", name] => Route::Namespace(owned(name)),
            ["api", "v1", "pods"] => Route::Pods(None),
            ["api", "v1", "namespaces", ns, "pods"] => Route::Pods(Some(owned(ns))),
            ["api", "v1", "namespaces", ns, "pods", name] => {
                Route::Pod { namespace: owned(ns), name: owned(name), status: false }
            }
            ["api", "v1", "namespaces", ns, "pods", name, "status"] => {
                Route::Pod { namespace: owned(ns), name: owned(name), status: true }
            }
            _ => return Err(ApiError::NoRoute),
        })
    }
}

/// The query parameters of list, watch, get and patch that the server honours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) watch: bool,
    pub(crate) resource_version: Option<u64>,
    pub(crate) resource_version_match: Option<String>,
    pub(crate) label_selector: String,
    pub(crate) field_selector: String,
    pub(crate) allow_bookmarks: bool,
    pub(crate) timeout_seconds: Option<u64>,
    pub(crate) limit: Option<usize>,
    pub(crate) continue_token: Option<String>,
    pub(crate) send_initial_events: Option<bool>,
    pub(crate) dry_run: bool,
    pub(crate) field_manager: Option<String>,
}

impl Query {
    pub(crate) fn parse(query: &str) -> Result<Query, ApiError> {
        let mut q = Query::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid {what} {value:?}: expected a number")))
            };
            match key.as_ref() {
                "watch" => q.watch = flag(&value),
                // "" and "0" both mean "any version": start from the current state.
                "resourceVersion" if value.is_empty() => q.resource_version = None,
                "resourceVersion" => q.resource_version = Some(number("resourceVersion")?).filter(|rv| *rv != 0),
                "resourceVersionMatch" => q.resource_version_match = Some(value.to_string()).filter(|v| !v.is_empty()),
                "labelSelector" => q.label_selector = value.to_string(),
                "fieldSelector" => q.field_selector = value.to_string(),
                "allowWatchBookmarks" => q.allow_bookmarks = flag(&value),
                "timeoutSeconds" => q.timeout_seconds = Some(number("timeoutSeconds")?),
                "limit" => q.limit = Some(number("limit")? as usize).filter(|l| *l > 0),
                "continue" => q.continue_token = Some(value.to_string()).filter(|v| !v.is_empty()),
                "sendInitialEvents" => q.send_initial_events = Some(flag(&value)),
                "dryRun" => q.dry_run = value == "All",
                "fieldManager" => q.field_manager = Some(value.to_string()),
                _ => {}
            }
        }
        Ok(q)
    }
}

fn flag(value: &str) -> bool {
    matches!(value, "1" | "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_resource() {
        assert_eq!(Route::parse("/api/v1/pods").unwrap(), Route::Pods(None));
        assert_eq!(
            Route::parse("/api/v1/namespaces/ns1/pods/web/status").unwrap(),
            Route::Pod { namespace: "ns1".into(), name: "web".into(), status: true }
        );
        assert_eq!(Route::parse("/api/v1/namespaces/ns1").unwrap(), Route::Namespace("ns1".into()));
        assert_eq!(Route::parse("/apis/apps/v1/deployments").unwrap_err().code(), 404);
    }

    #[test]
    fn queries_decode_selectors_and_versions() {
        let q = Query::parse(
            "watch=true&resourceVersion=12&fieldSelector=spec.nodeName%3Dnode-a&labelSelector=a+in+(b)&allowWatchBookmarks=true&timeoutSeconds=290",
        )
        .unwrap();
        assert!(q.watch && q.allow_bookmarks);
        assert_eq!((q.resource_version, q.timeout_seconds), (Some(12), Some(290)));
        assert_eq!((q.field_selector.as_str(), q.label_selector.as_str()), ("spec.nodeName=node-a", "a in (b)"));
        assert_eq!(Query::parse("resourceVersion=0").unwrap().resource_version, None);
        assert!(Query::parse("resourceVersion=abc").unwrap_err().to_string().contains("invalid resourceVersion"));
    }
}
