//! Who is asking, for the per-IP limits: an address a client cannot choose.

use std::net::{IpAddr, SocketAddr};

use axum::{extract::ConnectInfo, extract::Request};

/// The socket's peer or, behind `trusted_hops` proxies that each append to
/// X-Forwarded-For (API Gateway and function URLs do: one hop), the entry the
/// outermost of them added: anything to its left came from the client and may
/// be forged.
pub fn client_ip(request: &Request, trusted_hops: usize) -> Option<IpAddr> {
    if trusted_hops > 0 {
        let forwarded: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let index = forwarded.len().checked_sub(trusted_hops)?;
        return forwarded[index].parse().ok();
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(forwarded: &[&str], peer: Option<&str>) -> Request {
        let mut request = Request::new(Body::empty());
        for value in forwarded {
            request
                .headers_mut()
                .append("x-forwarded-for", value.parse().unwrap());
        }
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        }
        request
    }

    #[test]
    fn forwarded_for_is_trusted_only_as_far_as_the_configured_proxies() {
        let forged = request(&["6.6.6.6, 203.0.113.9"], Some("10.0.0.2:4000"));
        assert_eq!(client_ip(&forged, 0), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(client_ip(&forged, 1), Some("203.0.113.9".parse().unwrap()));
        // Two hops, the header split over two lines as some proxies send it.
        let split = request(&["203.0.113.9", "10.0.0.7"], None);
        assert_eq!(client_ip(&split, 2), Some("203.0.113.9".parse().unwrap()));
        // Fewer entries than proxies: nothing trustworthy.
        assert_eq!(client_ip(&request(&[], None), 1), None);
    }
}
