//! `_method` overrides: frameworks that read a query parameter or form field
//! as the method would act on a different method than the one judged. Found
//! here in every spelling some framework accepts, in the query and in form
//! bodies streamed chunk by chunk.

/// Whether a decoded form field name is read as `_method` by some framework:
/// PHP drops leading spaces and turns ` ` and `.` into `_` (so `.method` and
/// ` _method` count), Rack and PHP read `_method[...]` as the same key, and
/// letter case is ignored to be safe.
pub fn is_method_field(name: &[u8]) -> bool {
    reads_as_method(name, name.contains(&b']'))
}

/// [`is_method_field`] for a name of which only a prefix was kept:
/// `closes_bracket` says whether the whole name has a `]`.
fn reads_as_method(name: &[u8], closes_bracket: bool) -> bool {
    let start = name.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(name.len());
    let name = &name[start..];
    // PHP reads an unmatched `[` as `_` (`[method` is `_method`); a matched
    // one starts an array key (`_method[]` is `_method`).
    let unmatched = name.contains(&b'[') && !closes_bracket;
    let name: Vec<u8> = name.iter().map(|&b| if unmatched && b == b'[' { b'_' } else { b }).collect();
    let name = name.split(|&b| b == b'[').next().unwrap_or_default();
    name.len() == 7
        && name.iter().zip(b"_method").all(|(&b, &want)| {
            let b = if b == b' ' || b == b'.' { b'_' } else { b.to_ascii_lowercase() };
            b == want
        })
}

/// Whether a query string (or urlencoded body) has a `_method` field: fields
/// split on `&` or `;` (Rack 2 accepts both), names percent- and `+`-decoded.
pub(super) fn has_method_field(query: &str) -> bool {
    query.split(['&', ';']).any(|field| {
        let name = field.split('=').next().unwrap_or_default();
        let decoded: Vec<u8> = percent_encoding::percent_decode(name.replace('+', " ").as_bytes()).collect();
        is_method_field(&decoded)
    })
}

/// Finds a `_method` field in a form body as it streams past, so a request
/// whose framework would read it as another method never completes upstream.
///
/// pingora sends a body upstream chunk by chunk; the gateway checks each chunk
/// before it goes. A body refused here is cut off before its end, so the
/// upstream holds an incomplete request that no framework acts on. The scanner
/// keeps a little state between chunks, so a name split across chunks or
/// percent-encoded (`%5Fmethod`) is still found.
#[derive(Debug, Clone)]
pub enum FormOverrideScanner {
    /// `application/x-www-form-urlencoded`: field names, decoded.
    UrlEncoded(UrlEncodedNames),
    /// `multipart/form-data`: the `name` of each part's `Content-Disposition`.
    Multipart(MultipartNames),
}

impl FormOverrideScanner {
    /// A scanner for a request with this `Content-Type`, if it is a form.
    pub fn for_content_type(content_type: &[u8]) -> Option<Self> {
        let mut parts = content_type.split(|&b| b == b';');
        let essence = parts.next().unwrap_or_default().trim_ascii();
        if essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            return Some(FormOverrideScanner::UrlEncoded(UrlEncodedNames::default()));
        }
        if !essence.eq_ignore_ascii_case(b"multipart/form-data") {
            return None;
        }
        // Without a boundary no backend can read the parts at all.
        let boundary = parts.find_map(|param| {
            let (key, value) = split_param(param)?;
            key.eq_ignore_ascii_case(b"boundary").then(|| unquote(value).to_vec())
        })?;
        Some(FormOverrideScanner::Multipart(MultipartNames::new(&boundary)))
    }

    /// Feeds the next chunk; `true` once a `_method` field has been seen.
    pub fn found_in(&mut self, chunk: &[u8]) -> bool {
        match self {
            FormOverrideScanner::UrlEncoded(names) => chunk.iter().any(|&b| names.step(b)),
            FormOverrideScanner::Multipart(names) => names.feed(chunk),
        }
    }

    /// The body ended: a last field name without `=` counts too.
    pub fn found_at_end(&mut self) -> bool {
        match self {
            FormOverrideScanner::UrlEncoded(names) => names.in_name && names.reads_as_method(),
            FormOverrideScanner::Multipart(_) => false,
        }
    }
}

/// Streaming state of a urlencoded body: the current field name, decoded.
#[derive(Debug, Clone)]
pub struct UrlEncodedNames {
    in_name: bool,
    /// Enough of the decoded name to tell `_method` (longer names can't be,
    /// but for a bracket key, `_method[...]`)...
    name: Vec<u8>,
    /// ...so whether the whole name has a `]` is kept apart.
    closes_bracket: bool,
    /// Hex digits of a `%` escape in progress.
    escape: Option<[u8; 2]>,
    escape_len: usize,
}

impl Default for UrlEncodedNames {
    fn default() -> Self {
        UrlEncodedNames {
            in_name: true,
            name: Vec::new(),
            closes_bracket: false,
            escape: None,
            escape_len: 0,
        }
    }
}

impl UrlEncodedNames {
    fn reads_as_method(&self) -> bool {
        reads_as_method(&self.name, self.closes_bracket)
    }

    /// One byte; `true` when a field name read as `_method` just ended.
    fn step(&mut self, b: u8) -> bool {
        match b {
            b'&' | b';' => {
                let found = self.in_name && self.reads_as_method();
                *self = UrlEncodedNames::default();
                found
            }
            b'=' if self.in_name => {
                self.in_name = false;
                self.reads_as_method()
            }
            _ if !self.in_name => false,
            b'%' => {
                self.escape = Some([0; 2]);
                self.escape_len = 0;
                false
            }
            _ => {
                let decoded = match self.escape.as_mut() {
                    Some(digits) => {
                        digits[self.escape_len] = b;
                        self.escape_len += 1;
                        if self.escape_len < 2 {
                            return false;
                        }
                        let value =
                            std::str::from_utf8(digits).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                        self.escape = None;
                        value.unwrap_or(0)
                    }
                    None if b == b'+' => b' ',
                    None => b,
                };
                // Leading spaces don't count (PHP drops them); past 32 bytes
                // of name nothing can be `_method` (brackets aside).
                self.closes_bracket |= decoded == b']';
                if (!self.name.is_empty() || decoded != b' ') && self.name.len() < 32 {
                    self.name.push(decoded);
                }
                false
            }
        }
    }
}

/// Streaming state of a multipart body: looks for each part's header section
/// (after a `--boundary` line) and reads the `name` of its
/// `Content-Disposition`, so a `name="_method"` inside a part's content (an
/// uploaded HTML form, say) is not mistaken for a field.
#[derive(Debug, Clone)]
pub struct MultipartNames {
    /// `\n--boundary`.
    delimiter: Vec<u8>,
    /// Unmatched bytes that may still begin a delimiter, or a part's headers.
    pending: Vec<u8>,
    in_headers: bool,
}

/// A part's header section longer than this is read no further.
const MAX_PART_HEADERS: usize = 16 * 1024;

impl MultipartNames {
    fn new(boundary: &[u8]) -> Self {
        let mut delimiter = b"\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        // The body may open with the delimiter itself: read it as after a newline.
        MultipartNames { delimiter, pending: b"\n".to_vec(), in_headers: false }
    }

    fn feed(&mut self, chunk: &[u8]) -> bool {
        self.pending.extend_from_slice(chunk);
        loop {
            if self.in_headers {
                let end = find(&self.pending, b"\r\n\r\n")
                    .map(|at| at + 4)
                    .or_else(|| find(&self.pending, b"\n\n").map(|at| at + 2));
                let Some(end) = end.or((self.pending.len() > MAX_PART_HEADERS).then_some(self.pending.len()))
                else {
                    return false;
                };
                if part_is_method_field(&self.pending[..end]) {
                    return true;
                }
                self.pending.drain(..end);
                self.in_headers = false;
            } else {
                match find(&self.pending, &self.delimiter) {
                    Some(at) => {
                        self.pending.drain(..at + self.delimiter.len());
                        self.in_headers = true;
                    }
                    None => {
                        let keep = self.pending.len().min(self.delimiter.len());
                        self.pending.drain(..self.pending.len() - keep);
                        return false;
                    }
                }
            }
        }
    }
}

/// The header section of one part (after its delimiter line): is it named `_method`?
fn part_is_method_field(section: &[u8]) -> bool {
    section.split(|&b| b == b'\n').any(|line| {
        let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
        if !line[..colon].trim_ascii().eq_ignore_ascii_case(b"content-disposition") {
            return false;
        }
        line[colon + 1..].split(|&b| b == b';').skip(1).any(|param| {
            let Some((key, value)) = split_param(param) else { return false };
            let value = unquote(value);
            if key.eq_ignore_ascii_case(b"name") {
                is_method_field(value)
            } else if key.eq_ignore_ascii_case(b"name*") {
                // RFC 2231: charset'language'percent-encoded
                let encoded = value.rsplit(|&b| b == b'\'').next().unwrap_or_default();
                is_method_field(&percent_encoding::percent_decode(encoded).collect::<Vec<u8>>())
            } else {
                false
            }
        })
    })
}

/// `key = value` of a header parameter, both trimmed.
fn split_param(param: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = param.iter().position(|&b| b == b'=')?;
    Some((param[..eq].trim_ascii(), param[eq + 1..].trim_ascii()))
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] | [b'\'', inner @ .., b'\''] => inner,
        other => other,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
