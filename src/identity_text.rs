//! Emails and usernames as text: what may be registered, the form that is
//! stored, and the key two of them are compared by.
//!
//! Why this module exists: an account's email is its login and its username
//! is what upstreams see (`X-Auth-Username`). Unicode offers many ways to
//! write "the same" text: `ａdmin` (fullwidth), `ADMİN` (Turkish dotted
//! capital I), `admin\u{200b}` (a zero-width space), `ad\u{202e}nim` (a
//! right-to-left override that displays as something else). Compared byte by
//! byte each is a new account; shown to a person or logged by an upstream,
//! each passes for `admin`. So:
//!
//! * [`comparison_key`] maps every such variant to one key. The stores index
//!   emails (sled tree `emails`, Redis `email:<key>`) and usernames (tree
//!   `usernames`, Redis `username:<key>`) by it, so a variant of a taken
//!   email or username is refused as taken, and logins find the account
//!   whichever variant is typed.
//! * [`validate_email`] and [`validate_username`] refuse what no one needs in
//!   a name and what serves only to hide or reorder text: control, invisible
//!   and formatting characters, bidirectional controls, private-use and
//!   unassigned code points, unusual whitespace, and letters of several
//!   scripts mixed (`аdmin` with a Cyrillic `а`). They return the form to
//!   store.
//!
//! The key is, in order: NFKC (compatibility forms: fullwidth, ligatures,
//! superscripts), full Unicode case folding, NFKD, dropping default-ignorable
//! code points and the combining marks on Latin, Greek, Cyrillic and common
//! characters (accents: `İ` becomes `i`, `é` becomes `e`), mapping dotless
//! `ı`/`ȷ` to `i`/`j`, then NFC, trimmed. An ASCII string's key is its
//! lower-case form, exactly what the stores used before this module (trim and
//! lower-case), so existing ASCII data keeps its index entries.
//!
//! Trade-offs, chosen against lookalike accounts:
//! * `rené` and `rene` (and `Zoë`/`zoe`) collide: whoever registers first
//!   holds both. The stored name keeps its accent.
//! * Marks are kept on other scripts (Devanagari vowel signs and viramas,
//!   Thai, Arabic, Hebrew points), where they spell the word rather than
//!   decorate a letter that could pass for another.
//! * Confusables across scripts that are not mixed within one name (an
//!   all-Cyrillic name that looks Latin) and Latin lookalikes such as `ɑ`
//!   are not folded: upstreams should authorise by `X-Auth-User-Id`, and
//!   treat the username as a display name.

use icu_casemap::CaseMapper;
use icu_normalizer::{ComposingNormalizer, DecomposingNormalizer};
use icu_properties::props::{BidiControl, DefaultIgnorableCodePoint, GeneralCategory, Script, WhiteSpace};
use icu_properties::{CodePointMapData, CodePointSetData};

/// Longest email, in bytes of the stored form (RFC 5321's path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest username, in characters of the stored form.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest input (bytes, once trimmed) that is normalised at all: longer
/// text is refused (registration) or matches no account (login, lookup)
/// before any normalisation work, which NFKC can make up to 18 times longer.
/// No account's email is this long (every stored email is at most
/// [`MAX_EMAIL_BYTES`], as it was before this module), so no account is lost.
pub const MAX_INPUT_BYTES: usize = 1024;

/// Why an email or username was refused: a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(String);

/// The key an email or a username is compared by: two identifiers with the
/// same key are the same account name. See the module documentation for the
/// steps. Total (any text has a key) and idempotent: the key of a key is
/// itself, so passing a key where raw input is expected is harmless.
pub fn comparison_key(text: &str) -> String {
    let text = text.trim();
    // Printable ASCII is its own NFKC, NFKD and NFC, has no marks or
    // default-ignorable code points, and folds to its lower case.
    if text.bytes().all(|b| matches!(b, b' '..=b'~')) {
        return text.to_ascii_lowercase();
    }
    unicode_key(text)
}

/// [`comparison_key`] without its ASCII shortcut.
fn unicode_key(text: &str) -> String {
    let compatible = ComposingNormalizer::new_nfkc().normalize(text.trim());
    let folded = CaseMapper::new().fold_string(&compatible);
    let decomposed = DecomposingNormalizer::new_nfkd().normalize(&folded);
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let scripts = CodePointMapData::<Script>::new();
    let mut bases = String::with_capacity(decomposed.len());
    // Marks with no base character before them are dropped too.
    let mut drop_marks = true;
    for c in decomposed.chars() {
        if ignorable.contains(c) {
            continue;
        }
        if is_mark(c) {
            if !drop_marks {
                bases.push(c);
            }
            continue;
        }
        drop_marks = matches!(
            scripts.get(c),
            Script::Latin | Script::Greek | Script::Cyrillic | Script::Common | Script::Inherited
        );
        bases.push(match c {
            // The dotless letters: `İ` folds to `i` + a dot that is dropped
            // above, so `ı` must land on `i` as well, or `admın` is a new name.
            'ı' => 'i',
            'ȷ' => 'j',
            c => c,
        });
    }
    let composed = ComposingNormalizer::new_nfc().normalize(&bases);
    composed.trim().to_owned()
}

/// Checks an email and returns the form to store: NFKC, trimmed and
/// lower-cased (for an ASCII address, what the stores kept before).
///
/// Rules: one `@` between a non-empty local part and a domain; the domain
/// ASCII (after NFKC, so fullwidth letters are fine; an internationalised
/// domain is written in its `xn--` form), made of labels of letters, digits
/// and `-`, at least two of them; the local part may use any script but only
/// one (plus digits and punctuation), and neither part may contain
/// whitespace or any character [`validate_username`] refuses. At most
/// [`MAX_EMAIL_BYTES`] bytes stored.
pub fn validate_email(input: &str) -> Result<String, Refusal> {
    const SHAPE: &str = "email must be an address like name@example.com";
    let input = input.trim();
    if input.len() > MAX_INPUT_BYTES {
        return Err(Refusal(format!("email must be at most {MAX_EMAIL_BYTES} bytes")));
    }
    refuse_characters("email", input, false)?;
    let email = stored_email(input);
    refuse_characters("email", &email, false)?;
    if email.len() > MAX_EMAIL_BYTES {
        return Err(Refusal(format!("email must be at most {MAX_EMAIL_BYTES} bytes")));
    }
    let Some((local, domain)) = email.split_once('@') else { return Err(Refusal(SHAPE.into())) };
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(Refusal(SHAPE.into()));
    }
    if !domain.is_ascii() {
        return Err(Refusal(
            "the email's domain must be ASCII: write an internationalised domain in its xn-- form".into(),
        ));
    }
    if !domain_ok {
        return Err(Refusal(SHAPE.into()));
    }
    refuse_leading_mark("email", local)?;
    refuse_mixed_scripts("email", local)?;
    if comparison_key(local).is_empty() {
        return Err(Refusal(SHAPE.into()));
    }
    Ok(email)
}

/// Checks a username and returns the form to store: NFKC and trimmed, case
/// kept (an ASCII name is stored as typed, as before).
///
/// Rules: 1 to [`MAX_USERNAME_CHARS`] characters; no control, invisible or
/// formatting characters (general category Cc and Cf, default-ignorable code
/// points such as U+200B, U+00AD, U+FEFF, U+2060 and variation selectors),
/// no bidirectional controls (U+202A..U+202E, U+2066..U+2069, U+200E/F,
/// U+061C), no private-use or unassigned code points, no whitespace but the
/// plain space (U+0020), never two in a row; not starting with a combining
/// mark; letters from one script, or from the combinations Japanese, Chinese
/// and Korean write with (Latin, Han and Hiragana/Katakana, Bopomofo or
/// Hangul).
pub fn validate_username(input: &str) -> Result<String, Refusal> {
    let limit = || Refusal(format!("username must be 1 to {MAX_USERNAME_CHARS} characters"));
    let input = input.trim();
    if input.len() > MAX_INPUT_BYTES {
        return Err(limit());
    }
    refuse_characters("username", input, true)?;
    let username = stored_username(input);
    refuse_characters("username", &username, true)?;
    if username.is_empty() || username.chars().count() > MAX_USERNAME_CHARS {
        return Err(limit());
    }
    if username.contains("  ") {
        return Err(Refusal("username must not contain two spaces in a row".into()));
    }
    refuse_leading_mark("username", &username)?;
    refuse_mixed_scripts("username", &username)?;
    if comparison_key(&username).is_empty() {
        return Err(limit());
    }
    Ok(username)
}

/// The stored form of an email, without checking it: trimmed, NFKC,
/// lower-cased, NFC. Idempotent. For the stores, which keep what they are
/// given in this form.
pub fn stored_email(email: &str) -> String {
    let compatible = ComposingNormalizer::new_nfkc().normalize(email.trim());
    ComposingNormalizer::new_nfc().normalize(&compatible.to_lowercase()).into_owned()
}

/// The stored form of a username, without checking it: trimmed and NFKC.
pub fn stored_username(username: &str) -> String {
    ComposingNormalizer::new_nfkc().normalize(username.trim()).into_owned()
}

fn is_mark(c: char) -> bool {
    matches!(
        CodePointMapData::<GeneralCategory>::new().get(c),
        GeneralCategory::NonspacingMark | GeneralCategory::SpacingMark | GeneralCategory::EnclosingMark
    )
}

/// Refuses the characters that hide, reorder or fake text. `space` allows
/// U+0020 (usernames).
fn refuse_characters(what: &str, text: &str, space: bool) -> Result<(), Refusal> {
    let categories = CodePointMapData::<GeneralCategory>::new();
    let bidi = CodePointSetData::new::<BidiControl>();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let white = CodePointSetData::new::<WhiteSpace>();
    for c in text.chars() {
        if c == ' ' && space {
            continue;
        }
        let category = categories.get(c);
        let why = if bidi.contains(c) {
            "bidirectional control characters"
        } else if category == GeneralCategory::Control {
            "control characters"
        } else if white.contains(c)
            || matches!(
                category,
                GeneralCategory::SpaceSeparator
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            )
        {
            if space {
                "whitespace other than a plain space"
            } else {
                "whitespace"
            }
        } else if category == GeneralCategory::Format || ignorable.contains(c) {
            "invisible or formatting characters"
        } else if category == GeneralCategory::PrivateUse {
            "private-use characters"
        } else if matches!(category, GeneralCategory::Unassigned | GeneralCategory::Surrogate) {
            "unassigned code points"
        } else {
            continue;
        };
        return Err(Refusal(format!("{what} must not contain {why} (found U+{:04X})", u32::from(c))));
    }
    Ok(())
}

fn refuse_leading_mark(what: &str, text: &str) -> Result<(), Refusal> {
    match text.chars().next() {
        Some(c) if is_mark(c) => Err(Refusal(format!("{what} must not start with a combining mark"))),
        _ => Ok(()),
    }
}

/// A simplified form of UTS #39's "highly restrictive" level: the letters
/// come from one script, or from one of the sets CJK writing mixes.
fn refuse_mixed_scripts(what: &str, text: &str) -> Result<(), Refusal> {
    const MIXES: [&[Script]; 3] = [
        &[Script::Latin, Script::Han, Script::Hiragana, Script::Katakana],
        &[Script::Latin, Script::Han, Script::Bopomofo],
        &[Script::Latin, Script::Han, Script::Hangul],
    ];
    let scripts = CodePointMapData::<Script>::new();
    let mut seen: Vec<Script> = Vec::new();
    for c in text.chars() {
        let script = scripts.get(c);
        if !matches!(script, Script::Common | Script::Inherited | Script::Unknown) && !seen.contains(&script)
        {
            seen.push(script);
        }
    }
    if seen.len() <= 1 || MIXES.iter().any(|mix| seen.iter().all(|s| mix.contains(s))) {
        Ok(())
    } else {
        Err(Refusal(format!("{what} must not mix letters of different scripts (such as Latin and Cyrillic)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_keys_are_the_lower_case_form_the_stores_used_before() {
        for text in
            ["admin@example.com", "Ann@Example.COM", " bob@x.org ", "Mixed.Case+tag@Example.com", "a b"]
        {
            assert_eq!(comparison_key(text), text.trim().to_lowercase(), "{text:?}");
            assert_eq!(stored_email(text), text.trim().to_lowercase(), "{text:?}");
        }
        // Every printable ASCII character keeps its lower-case self.
        for c in (0x20u8..0x7f).map(char::from) {
            assert_eq!(comparison_key(&format!("a{c}b")), format!("a{}b", c.to_ascii_lowercase()), "{c:?}");
        }
    }

    #[test]
    fn the_ascii_shortcut_gives_the_full_key() {
        let printable = || (0x20u8..0x7f).map(char::from);
        for c in printable() {
            for d in printable() {
                for text in [format!("{c}{d}"), format!(" {c}A{d} "), format!("x{c}@{d}Y.org")] {
                    assert_eq!(comparison_key(&text), unicode_key(&text), "{text:?}");
                }
            }
        }
        // Not printable ASCII: the full path, which trims other whitespace too.
        for text in ["\tAdmin\n", "\u{3000}Admin", "ADMIN\u{7f}", "Ａdmin"] {
            assert_eq!(comparison_key(text), unicode_key(text), "{text:?}");
        }
        assert_eq!(comparison_key("\u{3000}Admin "), "admin");
    }

    #[test]
    fn variants_of_admin_share_its_key() {
        let admin = comparison_key("admin");
        for variant in [
            "ａｄｍｉｎ", // fullwidth
            "ADMİN",      // U+0130, Turkish dotted capital I
            "admın",      // U+0131, dotless i
            "ádmîn",
            "a\u{0301}dmin", // decomposed accent
            "Admin",
            "admin\u{200b}", // zero-width space (also refused by validation)
            "ad\u{00ad}min", // soft hyphen
            "\u{FEFF}admin",
            "ᴬdmin", // modifier letter capital A (NFKC)
            "𝐚𝐝𝐦𝐢𝐧", // mathematical bold
        ] {
            assert_eq!(comparison_key(variant), admin, "{variant:?}");
        }
        assert_eq!(comparison_key("ＡＤＭＩＮ@example.com"), "admin@example.com");
        assert_eq!(comparison_key("Straße"), comparison_key("STRASSE"));
        assert_eq!(comparison_key("ﬁle"), "file");
        assert_eq!(comparison_key("rené"), comparison_key("rene"), "the documented trade-off");
        assert_ne!(comparison_key("adm1n"), admin, "digits are not letters");
    }

    #[test]
    fn marks_that_spell_the_word_are_kept() {
        // Devanagari: the vowel sign and virama are the spelling.
        assert_ne!(comparison_key("राम"), comparison_key("रम"));
        assert_eq!(comparison_key("नमस्ते"), "नमस्ते");
        // Hangul syllables survive decomposition and recomposition.
        assert_eq!(comparison_key("한국"), "한국");
        assert_eq!(comparison_key("Ωμέγα"), "ωμεγα");
        assert_eq!(comparison_key("ПРИВЕТ"), "привет");
        assert_eq!(comparison_key("Ёлка"), "елка");
    }

    #[test]
    fn the_key_is_idempotent_for_every_assigned_code_point() {
        let categories = CodePointMapData::<GeneralCategory>::new();
        let mut text = String::new();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32).filter(|&c| {
            !matches!(categories.get(c), GeneralCategory::Unassigned | GeneralCategory::PrivateUse)
        }) {
            text.clear();
            text.push(c);
            let key = comparison_key(&text);
            assert_eq!(comparison_key(&key), key, "U+{:04X}", u32::from(c));
            // And with a base letter in front, as inside a name.
            text.insert(0, 'a');
            let key = comparison_key(&text);
            assert_eq!(comparison_key(&key), key, "a + U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn usernames_are_stored_nfkc_with_their_case() {
        assert_eq!(validate_username(" Ann Lee ").unwrap(), "Ann Lee");
        assert_eq!(validate_username("ｊｏｅ").unwrap(), "joe");
        assert_eq!(validate_username("René").unwrap(), "René");
        assert_eq!(validate_username("山田太郎").unwrap(), "山田太郎");
        assert_eq!(validate_username("やまだ Taro 山田").unwrap(), "やまだ Taro 山田");
        assert_eq!(validate_username("김민준").unwrap(), "김민준");
        assert_eq!(validate_username("иван").unwrap(), "иван");
        assert_eq!(validate_username("नमस्ते").unwrap(), "नमस्ते");
        assert_eq!(validate_username("bob_1-2.3").unwrap(), "bob_1-2.3");
        assert_eq!(validate_username(&"x".repeat(64)).unwrap().len(), 64);
    }

    #[test]
    fn usernames_that_hide_or_reorder_text_are_refused() {
        let refused = |name: &str| validate_username(name).expect_err(name).to_string();
        assert!(refused("ad\u{202e}nim").contains("bidirectional"));
        for bidi in
            ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2066}', '\u{2069}', '\u{200e}', '\u{061c}']
        {
            assert!(refused(&format!("ad{bidi}min")).contains("bidirectional"), "{bidi:?}");
        }
        for invisible in [
            '\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{2064}', '\u{feff}', '\u{00ad}', '\u{fe0f}',
            '\u{180e}', '\u{3164}',
        ] {
            let message = refused(&format!("ad{invisible}min"));
            assert!(
                message.contains("invisible") || message.contains("whitespace"),
                "{invisible:?}: {message}"
            );
        }
        assert!(refused("ad\tmin").contains("control"));
        assert!(refused("ad\u{7f}min").contains("control"));
        assert!(refused("ad\u{85}min").contains("control"));
        for space in ['\u{a0}', '\u{2002}', '\u{3000}', '\u{2028}', '\u{1680}'] {
            assert!(refused(&format!("ad{space}min")).contains("whitespace"), "{space:?}");
        }
        assert!(refused("ad  min").contains("two spaces"));
        assert!(refused("ad\u{e000}min").contains("private-use"));
        assert!(refused("ad\u{10ffff}min").contains("unassigned"));
        assert!(refused("ad\u{0378}min").contains("unassigned"));
        assert!(refused("аdmin").contains("scripts"), "Cyrillic а, Latin dmin");
        assert!(refused("pаypal").contains("scripts"));
        assert!(refused("\u{0301}x").contains("combining mark"));
        assert!(refused("").contains("1 to 64"));
        assert!(refused("   ").contains("1 to 64"));
        assert!(refused(&"x".repeat(65)).contains("1 to 64"));
        assert!(refused(&"x".repeat(5000)).contains("1 to 64"));
        // NFKC output is checked too: U+FDFA expands to 18 characters of Arabic.
        assert!(validate_username(&"\u{fdfa}".repeat(4)).is_err());
    }

    #[test]
    fn emails_are_stored_nfkc_and_lower_case() {
        assert_eq!(validate_email(" Ann@Example.com ").unwrap(), "ann@example.com");
        assert_eq!(validate_email("ＡＤＭＩＮ@ｅｘａｍｐｌｅ.com").unwrap(), "admin@example.com");
        assert_eq!(validate_email("René@example.com").unwrap(), "rené@example.com");
        assert_eq!(validate_email("иван@xn--e1afmkfd.xn--p1ai").unwrap(), "иван@xn--e1afmkfd.xn--p1ai");
        assert_eq!(validate_email("x@y.z").unwrap(), "x@y.z");
        assert_eq!(
            validate_email("first.last+tag@sub.example-1.org").unwrap(),
            "first.last+tag@sub.example-1.org"
        );
    }

    #[test]
    fn malformed_or_deceptive_emails_are_refused() {
        let refused = |email: &str| validate_email(email).expect_err(email).to_string();
        assert!(refused("admin\u{200b}@example.com").contains("invisible"));
        assert!(refused("admin@exa\u{200b}mple.com").contains("invisible"));
        assert!(refused("ad\u{202e}min@example.com").contains("bidirectional"));
        assert!(refused("ad min@example.com").contains("whitespace"));
        assert!(refused("admin@bücher.de").contains("xn--"));
        assert!(refused("admin@exаmple.com").contains("xn--"), "Cyrillic а in the domain");
        assert!(refused("аdmin@example.com").contains("scripts"));
        for shape in
            ["not-an-email", "@example.com", "a@", "a@b", "a@b@c.d", "a@.com", "a@b..c", "a@b_c.d", "a@b.c."]
        {
            assert!(refused(shape).contains("name@example.com"), "{shape}");
        }
        assert!(refused(&format!("{}@example.com", "a".repeat(250))).contains("254"));
        assert!(refused(&format!("{}@example.com", "a".repeat(5000))).contains("254"));
    }
}
