//! What the client needs to know about where GitHub is and how an owner authenticates.
//!
//! The variables themselves (`GITHUB_API_URL`, `GITHUB_TOKEN`, `OWNER_<NAME>_*`) are parsed in
//! one place, the controller's configuration; this module only holds the parsed forms.

use std::path::PathBuf;

use url::Url;

use super::types::Secret;

/// The default REST endpoint.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How one owner authenticates, before key files are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerAuth {
    Token(Secret),
    App {
        app_id: String,
        private_key_file: PathBuf,
        installation_id: Option<u64>,
    },
}

/// Accepts `http(s)://host[:port][/prefix]`, and makes the path end with `/` so joins keep the prefix.
pub fn parse_api_url(raw: &str) -> Option<Url> {
    let mut url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
        return None;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_dot_com_and_ghes_with_its_path_prefix() {
        assert_eq!(
            parse_api_url(DEFAULT_API_URL).unwrap().as_str(),
            "https://api.github.com/"
        );
        let ghes = parse_api_url("https://ghe.example/api/v3").unwrap();
        assert_eq!(
            ghes.join("user").unwrap().as_str(),
            "https://ghe.example/api/v3/user"
        );
    }

    #[test]
    fn only_http_urls_without_query_are_accepted() {
        assert!(parse_api_url("ftp://x").is_none());
        assert!(parse_api_url("https://x/?a=b").is_none());
        assert!(parse_api_url("not a url").is_none());
    }
}
