use std::net::IpAddr;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, Method, Version};

use super::*;

fn target(raw: &str) -> Result<Target, RequestError> {
    canonical_target(raw.as_bytes(), MethodOverride::Refuse)
}

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    map
}

fn rules() -> HeaderRules<'static> {
    HeaderRules { identity_prefix: "x-auth-", underscores: UnderscoreHeaders::Drop, trusted_peer: false }
}

#[test]
fn methods_must_be_upper_case_tokens() {
    for good in ["GET", "DELETE", "M-SEARCH", "PROPFIND"] {
        assert_eq!(canonical_method(&good.parse().unwrap()), Ok(()), "{good}");
    }
    for bad in ["get", "Delete", "dElEtE", "G3T", "-GET", "GET_"] {
        assert_eq!(canonical_method(&bad.parse().unwrap()), Err(RequestError::InvalidMethod), "{bad}");
    }
    assert_eq!(canonical_method(&Method::CONNECT), Err(RequestError::Connect));
}

#[test]
fn only_origin_form_targets_have_a_canonical_form() {
    for bad in ["item/x", "../admin/x", "*/admin/x", "*", "http://host/admin", "host:443", ""] {
        assert_eq!(target(bad), Err(RequestError::Path(PathError::NotOriginForm)), "{bad}");
    }
    assert_eq!(canonical_target(b"/caf\xff", MethodOverride::Refuse), Err(PathError::NotUtf8.into()));
    assert_eq!(target("/a#frag"), Err(PathError::Fragment.into()));
}

#[test]
fn targets_are_normalised_and_encoded_once() {
    let t = target("/a/../item/x?b=1&c=%2e").unwrap();
    assert_eq!(t.to_origin_form(), "/item/x?b=1&c=%2e");
    assert_eq!(target("/café?q=é").unwrap().to_origin_form(), "/caf%C3%A9?q=%C3%A9");
    assert_eq!(target("/caf%c3%a9").unwrap().path, "/caf%C3%A9");
    assert_eq!(target("/a{b}|c").unwrap().path, "/a%7Bb%7D%7Cc");
    assert_eq!(target("/x?").unwrap().query, None);
    for raw in ["/a/../item/x?b=1", "/café?q=é", "/a{b}|c", "//x/./y/?%41=1"] {
        let once = target(raw).unwrap().to_origin_form();
        assert_eq!(target(&once).unwrap().to_origin_form(), once, "{raw}");
    }
    assert_eq!(target("/x?q=100%"), Err(PathError::BadEscape.into()));
}

#[test]
fn method_override_parameters_are_refused_unless_allowed() {
    for raw in [
        "/x?_method=DELETE",
        "/x?a=1&%5Fmethod=delete",
        "/x?_METHOD=put",
        "/x?_method",
        "/x?a=1;_method=DELETE",
        "/x?.method=DELETE",
        "/x?%2Emethod=DELETE",
        "/x?+_method=DELETE",
        "/x?_method[]=DELETE",
        "/x?[method=DELETE",
    ] {
        assert_eq!(target(raw), Err(RequestError::MethodOverride), "{raw}");
    }
    assert!(canonical_target(b"/x?_method=DELETE", MethodOverride::Allow).is_ok());
    assert!(target("/x?my_method=1&method=2").is_ok());
}

#[test]
fn host_and_framing_rules() {
    let get = Method::GET;
    let v11 = Version::HTTP_11;
    let check = |lines: &[(&str, &str)]| inspect_headers(&get, v11, &headers(lines), rules());
    assert_eq!(check(&[]), Err(HeaderError::MissingHost));
    assert_eq!(
        inspect_headers(&get, Version::HTTP_10, &headers(&[]), rules()),
        Err(HeaderError::MissingHost)
    );
    assert_eq!(check(&[("host", "a"), ("host", "b")]), Err(HeaderError::DuplicateHost));
    for bad in ["a/b", "user@h", "h:x", "[::1", "h:123456", "", "a b"] {
        assert_eq!(check(&[("host", bad)]), Err(HeaderError::InvalidHost), "{bad}");
    }
    for good in ["example.com", "example.com:8080", "127.0.0.1:1", "[::1]:80", "[::1]"] {
        assert!(check(&[("host", good)]).is_ok(), "{good}");
    }
    let h = ("host", "h");
    assert_eq!(check(&[h, ("content-length", "5, 5")]).unwrap().content_length, Some(5));
    assert_eq!(
        check(&[h, ("content-length", "5"), ("content-length", "5")]).unwrap().content_length,
        Some(5)
    );
    assert_eq!(check(&[h, ("content-length", "5")]).unwrap().content_length, None);
    for bad in
        [&[h, ("content-length", "5, 6")][..], &[h, ("content-length", "+5")], &[h, ("content-length", "")]]
    {
        assert_eq!(check(bad), Err(HeaderError::InvalidContentLength));
    }
    assert!(check(&[h, ("transfer-encoding", "chunked")]).is_ok());
    for bad in ["gzip, chunked", "chunked, identity", "xchunked"] {
        assert_eq!(check(&[h, ("transfer-encoding", bad)]), Err(HeaderError::InvalidTransferEncoding));
    }
    let both = [h, ("transfer-encoding", "chunked"), ("content-length", "3")];
    assert_eq!(check(&both), Err(HeaderError::InvalidTransferEncoding));
}

#[test]
fn spoofable_headers_are_listed_for_removal() {
    let map = headers(&[
        ("host", "h"),
        ("x_auth_user_id", "1"),
        ("x-auth_admin", "true"),
        ("X-Auth-Email", "a@b"),
        ("x-forwarded-for", "1.2.3.4"),
        ("forwarded", "for=1.2.3.4"),
        ("x-real-ip", "1.2.3.4"),
        ("x-http-method-override", "DELETE"),
        ("connection", "keep-alive, x-custom"),
        ("x-custom", "1"),
        ("upgrade", "websocket"),
        ("accept", "*/*"),
    ]);
    let plan = inspect_headers(&Method::GET, Version::HTTP_11, &map, rules()).unwrap();
    let mut removed: Vec<&str> = plan.remove.iter().map(HeaderName::as_str).collect();
    removed.sort_unstable();
    let expected = [
        "connection",
        "forwarded",
        "upgrade",
        "x-auth-email",
        "x-auth_admin",
        "x-custom",
        "x-forwarded-for",
        "x-http-method-override",
        "x-real-ip",
        "x_auth_user_id",
    ];
    assert_eq!(removed, expected);
    assert!(!plan.websocket, "no `Connection: upgrade`");
    let more = headers(&[
        ("host", "h"),
        ("x-original-url", "/admin"),
        ("true-client-ip", "6.6.6.6"),
        ("x-forwarded-prefix", "/admin"),
    ]);
    let plan = inspect_headers(&Method::GET, Version::HTTP_11, &more, rules()).unwrap();
    assert_eq!(plan.remove.len(), 3, "{:?}", plan.remove);
    let trusted = HeaderRules { trusted_peer: true, ..rules() };
    let plan = inspect_headers(&Method::GET, Version::HTTP_11, &more, trusted).unwrap();
    assert_eq!(plan.remove.len(), 2, "a trusted proxy's X-Forwarded-Prefix is kept: {:?}", plan.remove);
    let nbsp = http::HeaderValue::from_bytes(b"application/x-www-form-urlencoded\xa0").unwrap();
    let mut odd = headers(&[("host", "h")]);
    odd.insert(CONTENT_TYPE, nbsp);
    assert_eq!(
        inspect_headers(&Method::POST, Version::HTTP_11, &odd, rules()),
        Err(HeaderError::InvalidContentType)
    );
    let types = headers(&[("host", "h"), ("content-type", "text/plain"), ("content-type", "a/b")]);
    assert_eq!(
        inspect_headers(&Method::POST, Version::HTTP_11, &types, rules()),
        Err(HeaderError::DuplicateContentType)
    );
    let reject = HeaderRules { underscores: UnderscoreHeaders::Reject, ..rules() };
    assert_eq!(inspect_headers(&Method::GET, Version::HTTP_11, &map, reject), Err(HeaderError::Underscore));
}

#[test]
fn websocket_upgrades_are_recognised_only_when_well_formed() {
    let ws = |method: Method, version, lines: &[(&str, &str)]| {
        let mut all = vec![("host", "h")];
        all.extend_from_slice(lines);
        inspect_headers(&method, version, &headers(&all), rules()).unwrap().websocket
    };
    let good = [("connection", "Upgrade"), ("upgrade", "websocket")];
    assert!(ws(Method::GET, Version::HTTP_11, &good));
    assert!(!ws(Method::POST, Version::HTTP_11, &good));
    assert!(!ws(Method::GET, Version::HTTP_10, &good));
    assert!(!ws(Method::GET, Version::HTTP_11, &[("upgrade", "websocket")]));
    assert!(!ws(Method::GET, Version::HTTP_11, &[("connection", "upgrade"), ("upgrade", "h2c")]));
}

#[test]
fn the_client_address_comes_from_trusted_proxies_only() {
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()]);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let chain = trusted.client(ip("192.0.2.9"), ["1.2.3.4"].into_iter());
    assert_eq!(chain.client, ip("192.0.2.9"), "an untrusted peer is the client");
    assert_eq!(chain.forwarded_for(), "192.0.2.9");
    let chain = trusted.client(ip("127.0.0.1"), ["6.6.6.6, 198.51.100.7", "10.1.1.1"].into_iter());
    assert_eq!(chain.client, ip("198.51.100.7"), "right to left, skipping trusted hops");
    assert_eq!(chain.forwarded_for(), "198.51.100.7, 10.1.1.1, 127.0.0.1");
    let chain = trusted.client(ip("127.0.0.1"), ["garbage, 10.0.0.2"].into_iter());
    assert_eq!(chain.client, ip("10.0.0.2"), "what can't be parsed ends the chain");
    let chain = trusted.client(ip("::ffff:127.0.0.1"), std::iter::empty());
    assert_eq!(chain.client, ip("127.0.0.1"));
    assert!(trusted.contains(ip("::ffff:10.2.3.4")));
}

#[test]
fn forwarded_for_writes_addresses_as_display_does() {
    let trusted = TrustedProxies::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
    for (peer, hops) in [
        ("0.0.0.0", ""),
        ("255.255.255.255", "10.0.0.1"),
        ("2001:db8::1", "192.0.2.10, 2001:db8::2"),
        ("9.87.65.4", "1.10.100.200"),
    ] {
        let ips: Vec<IpAddr> = hops
            .split(", ")
            .filter(|h| !h.is_empty())
            .map(|h| h.parse().unwrap())
            .chain([peer.parse().unwrap()])
            .collect();
        let expected = ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        // With every hop trusted, the chain's client is the leftmost entry.
        let chain = trusted.client(peer.parse().unwrap(), [hops].into_iter().filter(|h| !h.is_empty()));
        assert_eq!(chain.forwarded_for(), expected);
    }
}

#[test]
fn method_fields_in_form_bodies_are_found_across_chunks() {
    let found = |content_type: &str, chunks: &[&str]| {
        let mut scanner = FormOverrideScanner::for_content_type(content_type.as_bytes()).unwrap();
        chunks.iter().any(|c| scanner.found_in(c.as_bytes())) || scanner.found_at_end()
    };
    let form = "application/x-www-form-urlencoded; charset=utf-8";
    for chunks in [
        &["_method=DELETE"][..],
        &["a=1&_met", "hod=delete"],
        &["a=1&%5F", "method=put"],
        &["a=1&_%6Dethod=put"],
        &["a=1&_METHOD"],
        &["a=1;_method=DELETE"],
        &["a=1&+_method=DELETE"],
        &["a=1&%20_method=DELETE"],
        &[".method=DELETE"],
        &["%2Emethod=DELETE"],
        &["_method[]=DELETE"],
        &["_method[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]=DELETE"],
        &["[method=DELETE"],
    ] {
        assert!(found(form, chunks), "{chunks:?}");
    }
    assert!(!found(form, &["a=_method&b=1&my_method=2&_methods=3&x=.method"]));
    let multipart = "multipart/form-data; boundary=\"xyz\"";
    let part = |headers: &str| format!("--xyz\r\n{headers}\r\n\r\nDELETE\r\n--xyz--\r\n");
    for headers in [
        "Content-Disposition: form-data; name=\"_method\"",
        "content-disposition: form-data; NAME=_method",
        "Content-Disposition: form-data; name = '_method'",
        "Content-Disposition: form-data; name*=UTF-8''%5Fmethod",
        "Content-Disposition: form-data; name=\".method\"",
    ] {
        let body = part(headers);
        let (first, second) = body.split_at(body.len() / 2);
        assert!(found(multipart, &[first, second]), "{headers}");
        assert!(found(multipart, &[&body]), "{headers}");
    }
    let upload = "--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.html\"\r\n\r\n\
                  <input name=\"_method\" value=\"DELETE\">\r\n--xyz--\r\n";
    assert!(!found(multipart, &[upload]), "a part's content is not a field name");
    assert!(!found(multipart, &[&part("Content-Disposition: form-data; name=\"_methods\"")]));
    assert!(FormOverrideScanner::for_content_type(b"multipart/form-data").is_none(), "no boundary");
    assert!(FormOverrideScanner::for_content_type(b"application/json").is_none());
}

#[test]
fn close_in_any_connection_header_wins() {
    assert!(asks_to_close(&headers(&[("connection", "keep-alive"), ("connection", "close")])));
    assert!(asks_to_close(&headers(&[("connection", "keep-alive, CLOSE")])));
    assert!(asks_to_close(&headers(&[("connection", " close ,x-custom")])));
    assert!(!asks_to_close(&headers(&[("connection", "keep-alive, closer")])));
    assert!(!asks_to_close(&headers(&[("x-connection", "close")])));
}
