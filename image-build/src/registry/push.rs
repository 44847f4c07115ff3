//! Pushing an update bundle to a registry (the OCI distribution API's push: `HEAD` a blob to
//! skip what the repository has, `POST` an upload session, `PUT` the blob monolithically with
//! its digest, then `PUT` the manifest under the tag). The same transport, TLS rules
//! (`--insecure-registry`, `BERTH_INSECURE_REGISTRIES`) and authentication as pulls: the
//! registry's challenge names the push scope, answered with the same credentials.

use std::fs;

use ureq::http::{Method, Response, StatusCode};
use ureq::Body;

use super::{error_detail, header, Client, Failure, PullOptions};
use crate::blobs::BlobCache;
use crate::layout::LayoutImage;
use crate::reference::RegistryRef;
use crate::source::ImageError;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The manifest's digest.
    pub digest: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the repository already had.
    pub skipped: usize,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// Pushes the image `bundle` (an update bundle's or a containerDisk's, read from its layout) as
/// `target` (a tag; written `written` on the command line).
pub fn push_image(
    bundle: &LayoutImage,
    target: &RegistryRef,
    written: &str,
    opts: &PullOptions,
) -> Result<Pushed, ImageError> {
    let Some(tag) = target.tag.as_deref().filter(|_| target.digest.is_none()) else {
        return Err(ImageError::Invalid {
            reference: written.to_string(),
            message: "push to a tag (REGISTRY/REPO:TAG), not a digest".into(),
        });
    };
    let scratch = tempfile::tempdir().map_err(|e| ImageError::Registry {
        reference: written.to_string(),
        message: format!("a scratch directory: {e}"),
    })?;
    let cache = BlobCache::new(scratch.path().to_path_buf());
    let client = Client::new(target, written, &cache, opts);
    let mut pushed = Pushed { digest: bundle.digest.clone(), uploaded: 0, skipped: 0, bytes: 0 };
    for d in &bundle.blobs {
        let url = client.blob_url(&d.digest);
        let head = client.send(Method::HEAD, &url, None, Vec::new()).map_err(|f| f.error)?;
        if head.status() == StatusCode::OK {
            pushed.skipped += 1;
            continue;
        }
        let bytes = fs::read(bundle.blob(&d.digest))
            .map_err(|e| client.error(format!("reading blob {}: {e}", d.digest)))?;
        client.upload(&d.digest, bytes)?;
        pushed.uploaded += 1;
        pushed.bytes += d.size;
    }
    let url = format!("{}/v2/{}/manifests/{tag}", client.base, target.repository);
    let response = client
        .send(Method::PUT, &url, Some(&bundle.media_type), bundle.manifest.clone())
        .map_err(|f| f.error)?;
    if response.status() != StatusCode::CREATED {
        return Err(client.answered(&url, response));
    }
    Ok(pushed)
}

impl Client<'_> {
    /// A request with a body, answering an authentication challenge once.
    fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Response<Body>, Failure> {
        let mut answered = false;
        loop {
            let sent = self.authorization.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut request = ureq::http::Request::builder().method(method.clone()).uri(url);
            if let Some(content_type) = content_type {
                request = request.header("Content-Type", content_type);
            }
            if let Some(authorization) = &sent {
                request = request.header("Authorization", authorization);
            }
            let request = request.body(body.clone()).map_err(|e| self.transport(url, e))?;
            let response = self.agent.run(request).map_err(|e| self.transport(url, e))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if answered {
                return Err(self.rejected(url, "the registry", response).into());
            }
            answered = true;
            let challenges: Vec<super::Challenge> = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(super::auth::parse_www_authenticate)
                .collect();
            let authorization = self.answer(url, &challenges)?;
            *self.authorization.lock().unwrap_or_else(|e| e.into_inner()) = Some(authorization);
        }
    }

    /// An answer that is not the one wanted.
    fn answered(&self, url: &str, response: Response<Body>) -> ImageError {
        let status = response.status();
        self.error(format!("{url}: the registry answered {status}{}", error_detail(response)))
    }

    /// Uploads one blob: an upload session, then the blob in one `PUT` with its digest.
    fn upload(&self, digest: &str, bytes: Vec<u8>) -> Result<(), ImageError> {
        let start = format!("{}/v2/{}/blobs/uploads/", self.base, self.image.repository);
        let response = self.send(Method::POST, &start, None, Vec::new()).map_err(|f| f.error)?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.answered(&start, response));
        }
        let location = header(&response, "location")
            .ok_or_else(|| self.error(format!("{start}: the upload session has no Location")))?;
        let location = if location.starts_with('/') { format!("{}{location}", self.base) } else { location };
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let response =
            self.send(Method::PUT, &url, Some("application/octet-stream"), bytes).map_err(|f| f.error)?;
        if response.status() != StatusCode::CREATED {
            return Err(self.answered(&url, response));
        }
        Ok(())
    }
}
