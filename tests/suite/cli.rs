//! The command line: config checks, start-up refusals, and user management
//! both on a stopped gateway's store and through a running gateway.

use std::process::Command;

use crate::common::{binary, Gateway, Options, Upstream};

#[test]
fn check_config_accepts_every_shipped_config() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn check_config_points_at_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[upstream]\naddresses = [\"127.0.0.1:1\"]\n\n[[routes]]\npath = \"/a\"\npolicy = \"everyone\"\n",
    )
    .unwrap();
    let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:6:10: unknown policy `everyone`", path.display())), "{stderr}");
}

/// `limits.failures_before_backoff = 0` is "off" (passes the check); a
/// negative or non-number count is refused at its value.
#[test]
fn check_config_takes_0_as_no_backoff_and_refuses_other_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.toml");
    for (value, ok) in [("0", true), ("7", true), ("-1", false), ("\"off\"", false)] {
        let text = format!(
            "[upstream]\naddresses = [\"127.0.0.1:1\"]\n[limits]\nfailures_before_backoff = {value}\n"
        );
        std::fs::write(&path, text).unwrap();
        let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{value}: {stderr}");
        if !ok {
            assert!(stderr.contains(&format!("{}:4:27:", path.display())), "{value}: {stderr}");
        }
    }
}

/// Role demands a route can't have are refused at their line: a name
/// outside the role alphabet, roles on a route that identifies nobody, a
/// `roles_match` without roles or with an unknown word.
#[test]
fn check_config_refuses_bad_role_demands_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let head = "[upstream]\naddresses = [\"127.0.0.1:1\"]\n\n[[routes]]\npath = \"/a\"\n";
    let cases = [
        (
            "policy = \"any\"\nroles = [\"editor\", \"Publisher\"]\n",
            ":7:20: `Publisher` is not a valid role name",
        ),
        ("policy = \"public\"\nroles = [\"editor\"]\n", "`roles` needs a route that identifies the caller"),
        ("policy = \"optional\"\nroles = [\"editor\"]\n", "(policy any, fresh or admin), not `optional`"),
        ("policy = \"any\"\nroles_match = \"all\"\n", ":7:15: `roles_match` needs a `roles` list"),
        (
            "policy = \"any\"\nroles = [\"editor\"]\nroles_match = \"most\"\n",
            ":8:15: roles_match `most`: expected",
        ),
        (
            "policy = \"any\"\nfresh = true\n",
            "`fresh = true` only applies to admin routes and routes with `roles`",
        ),
    ];
    for (route, expected) in cases {
        let path = dir.path().join("roles.toml");
        std::fs::write(&path, format!("{head}{route}")).unwrap();
        let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{route}: {stderr}");
    }
    let path = dir.path().join("good.toml");
    let good =
        "policy = \"any\"\nroles = [\"editor\", \"billing:write\"]\nroles_match = \"all\"\nfresh = true\n";
    std::fs::write(&path, format!("{head}{good}")).unwrap();
    let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `check-config` builds what `serve` builds: a key file `serve` cannot read
/// fails the check too, not only the start.
#[test]
fn check_config_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let missing = dir.path().join("missing.pub.pem");
    std::fs::write(
        &path,
        format!(
            "[upstream]\naddresses = [\"127.0.0.1:1\"]\n\n[tokens]\nsigning_key = \"k1\"\n\n[[tokens.keys]]\n\
             kid = \"k1\"\nalgorithm = \"EdDSA\"\npublic_key = \"{}\"\nprivate_key = \"{}\"\n",
            missing.display(),
            dir.path().join("missing.key.pem").display()
        ),
    )
    .unwrap();
    let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("key `k1`: cannot read") && stderr.contains("missing.pub.pem"), "{stderr}");
    let serve = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env("GATEHOUSE_ADMIN_TOKEN", "an-admin-token-long-enough-for-the-check-0123456789")
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(String::from_utf8_lossy(&serve.stderr).contains("key `k1`: cannot read"));
}

#[test]
fn serve_refuses_a_missing_or_short_secret_and_says_how_to_make_one() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options { seed_admin: false, ..Options::default() });
    drop(upstream);
    let mut gw = gw;
    gw.kill();
    for secret in ["", "too-short"] {
        let out = gw.command().env("GATEHOUSE_JWT_SECRET", secret).arg("serve").output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("token signing secret") && stderr.contains("/dev/urandom"), "{stderr}");
        assert!(secret.is_empty() || !stderr.contains(secret), "the secret leaked into the message");
    }
}

#[test]
fn users_are_managed_offline_and_through_a_running_gateway() {
    let upstream = Upstream::start();
    let mut gw = Gateway::start(&upstream, Options::default());

    // Online: the gateway holds the store, so the CLI uses the admin API.
    let out = gw.cli(&["user", "add", "--email", "Lee@Example.com", "--username", "lee"], "lee-password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gw.login("lee@example.com", "lee-password");
    let out = gw.cli(&["user", "set-admin", "lee@example.com", "true"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = gw.cli(&["user", "list"], "");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("lee@example.com") && listing.contains("admin@example.com"), "{listing}");
    assert!(!listing.contains("argon2"), "password hashes must not be listed");

    // Without the admin token the CLI explains what it needs.
    let out = gw.command().env_remove("GATEHOUSE_ADMIN_TOKEN").args(["user", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin API token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Offline: the CLI opens the store itself.
    gw.terminate();
    let out = gw.cli(&["user", "show", "lee@example.com"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["is_admin"], true);
    let out = gw.cli(&["user", "delete", "lee@example.com"], "");
    assert!(out.status.success());
    let out = gw.cli(&["user", "show", "lee@example.com"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such user"));
    let out =
        gw.cli(&["user", "add", "--email", "admin@example.com", "--username", "again"], "long-password");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

/// What the README says the user commands print, and that a change made
/// through a running gateway's admin API is in force when the command
/// returns: the very next request is judged with it.
#[test]
fn user_commands_print_json_on_stdout_and_are_in_force_when_they_return() {
    let upstream = Upstream::start();
    let gw = Gateway::start(&upstream, Options::default());
    let out = gw.cli(&["user", "add", "--email", "kim@example.com", "--username", "kim"], "kim-password-1\n");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let user: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = user.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["blocked", "created_at", "email", "id", "is_admin", "roles", "username"]);
    let positions: Vec<usize> = keys.iter().map(|k| text.find(&format!("\"{k}\"")).unwrap()).collect();
    assert!(positions.is_sorted(), "keys printed in order: {text}");
    assert!(user["id"].is_u64() && user["created_at"].is_u64(), "{text}");
    assert_eq!((user["is_admin"].as_bool(), user["roles"].as_array().map(Vec::len)), (Some(false), Some(0)));
    let id = user["id"].to_string();

    // A refusal: nothing on stdout, one line on stderr, exit 1.
    let out =
        gw.cli(&["user", "add", "--email", "kim@example.com", "--username", "kim2"], "kim-password-1\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "gatehouse: An account with this email already exists.\n"
    );
    // A usage error: exit 2.
    assert_eq!(gw.cli(&["user", "frobnicate"], "").status.code(), Some(2));

    let json = |args: &[&str]| -> serde_json::Value {
        let out = gw.cli(args, "");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let roles = json(&["user", "roles", "add", &id, "editor"]);
    assert_eq!(roles, serde_json::json!({"roles": ["editor"], "user_id": user["id"]}));

    // In force on return: no waiting between the command and the request.
    let (access, _) = gw.login("kim@example.com", "kim-password-1");
    assert_eq!(gw.get("/item/chair", Some(&access)).0, 200);
    assert_eq!(json(&["user", "block", "kim@example.com"])["blocked"], true);
    assert_eq!(gw.get("/item/chair", Some(&access)).1["error"], "account_blocked");
    json(&["user", "unblock", &id]);
    let (access, _) = gw.login("kim@example.com", "kim-password-1");
    assert_eq!(json(&["revoke", "user", &id])["id"], user["id"]);
    assert_eq!(gw.get("/item/chair", Some(&access)).1["error"], "token_revoked");
    assert_eq!(json(&["user", "delete", &id]), serde_json::json!({"message": "User deleted."}));
}
