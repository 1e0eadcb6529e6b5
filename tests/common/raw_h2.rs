//! One raw HTTP/2 request with exactly the method, target and header fields
//! given (cleartext, prior knowledge): what the HTTP clients won't send, such
//! as a lower-case method or a `Host` beside `:authority`.

use std::net::SocketAddr;

/// The answer's status and body, or why there was none (a stream reset, a
/// refused connection, or the request could not even be expressed in HTTP/2).
pub fn request(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    fields: &[(String, String)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in fields {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(()).map_err(|e| format!("not expressible in HTTP/2: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut client, connection) = h2::client::handshake(tcp).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let (response, mut stream) =
            client.send_request(request, body.is_empty()).map_err(|e| format!("not sent: {e}"))?;
        if !body.is_empty() {
            stream.send_data(bytes::Bytes::copy_from_slice(body), true).map_err(|e| e.to_string())?;
        }
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let response = response.await.map_err(|e| format!("reset: {e}"))?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                bytes.extend_from_slice(&chunk.map_err(|e| format!("reset mid-body: {e}"))?);
            }
            Ok::<_, String>((status, String::from_utf8_lossy(&bytes).into_owned()))
        });
        answer.await.map_err(|_| "no answer within 10 s".to_owned())?
    })
}
