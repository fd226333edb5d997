use super::*;
use chrono::TimeZone;

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, day, 12, 0, 0).unwrap()
}

fn keyring(path: &Path, now: DateTime<Utc>) -> Keyring {
    Keyring::open(path, false, Duration::ZERO, now).unwrap()
}

#[test]
fn created_tokens_verify_and_the_file_holds_only_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/tokens.json");
    let store = TokenStore::new(&path);
    let issued = store.create(Role::Run, "ci", None, at(1)).unwrap();
    let (id, secret) = parse_token(&issued.token).unwrap();
    assert_eq!(id, issued.record.id);
    assert!(issued.token.starts_with("floe_") && issued.token.len() == 5 + 12 + 1 + 64);
    assert!(!format!("{issued:?}").contains(&hex::encode(secret)));

    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&hex::encode(secret)), "{text}");
    assert!(text.contains(&hex::encode(secret_hash(&secret))));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let keys = keyring(&path, at(2));
    assert!(keys.enforcing());
    assert!(!keys.has_usable_admin());
    let identity = keys.verify(&issued.token, at(2)).unwrap();
    assert_eq!(
        *identity,
        Identity {
            token_id: id.to_owned(),
            name: "ci".to_owned(),
            role: Role::Run
        }
    );
}

#[test]
fn wrong_secrets_and_malformed_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let issued = TokenStore::new(&path)
        .create(Role::Admin, "", None, at(1))
        .unwrap();
    let keys = keyring(&path, at(1));
    let id = &issued.record.id;
    // The id is right and the secret differs in its first, or only in its last, byte:
    // both go through the constant-time comparison and are refused alike.
    let mut first = issued.token.clone().into_bytes();
    let at_secret = TOKEN_PREFIX.len() + ID_LEN + 1;
    first[at_secret] = if first[at_secret] == b'0' { b'1' } else { b'0' };
    let mut last = issued.token.clone().into_bytes();
    let end = last.len() - 1;
    last[end] = if last[end] == b'0' { b'1' } else { b'0' };
    for forged in [first, last] {
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(keys.verify(&forged, at(1)), Err(Refusal::Unknown));
    }
    let other_id = format!("floe_{}_{}", "a".repeat(12), "0".repeat(64));
    assert_eq!(keys.verify(&other_id, at(1)), Err(Refusal::Unknown));
    for malformed in [
        "",
        "floe_",
        "bearer",
        &format!("floe_{id}"),
        &format!("floe_{id}_abc"),
        &format!("floe_{id}_{}", "z".repeat(64)),
        &format!("floe_{}_{}", "A".repeat(12), "0".repeat(64)),
        &issued.token[5..],
    ] {
        assert_eq!(
            keys.verify(malformed, at(1)),
            Err(Refusal::Malformed),
            "{malformed}"
        );
    }

    assert!(hashes_match(&[7; 32], &[7; 32]));
    let mut differs_last = [7; 32];
    differs_last[31] = 8;
    assert!(!hashes_match(&[7; 32], &differs_last));
}

#[test]
fn revoked_and_expired_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = TokenStore::new(&path);
    let expiring = store
        .create(
            Role::Read,
            "short",
            Some(expiry_after("2d", at(1)).unwrap()),
            at(1),
        )
        .unwrap();
    assert_eq!(expiring.record.expires_at, Some(at(3)));
    let revoked = store.create(Role::Admin, "gone", None, at(1)).unwrap();

    let keys = keyring(&path, at(1));
    assert!(keys.has_usable_admin());
    assert!(keys.verify(&expiring.token, at(2)).is_ok());
    assert_eq!(keys.verify(&expiring.token, at(3)), Err(Refusal::Expired));

    assert!(keys.verify(&revoked.token, at(1)).is_ok());
    let record = store.revoke(&revoked.record.id, at(2)).unwrap();
    assert!(record.revoked && record.revoked_at == Some(at(2)));
    // Revoking again keeps the first time.
    assert_eq!(store.revoke(&revoked.record.id, at(4)).unwrap(), record);
    keys.refresh(at(2));
    assert_eq!(keys.verify(&revoked.token, at(2)), Err(Refusal::Revoked));
    assert!(!keys.has_usable_admin());

    match store.revoke("aaaaaaaaaaaa", at(2)) {
        Err(AuthError::UnknownToken(id)) => assert_eq!(id, "aaaaaaaaaaaa"),
        other => panic!("{other:?}"),
    }
    assert!(expiry_after("soon", at(1)).is_err());
}

#[test]
fn authentication_turns_on_with_the_first_token_and_never_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let keys = keyring(&path, at(1));
    assert!(!keys.enforcing());
    let store = TokenStore::new(&path);
    let issued = store.create(Role::Admin, "first", None, at(1)).unwrap();
    keys.refresh(at(1));
    assert!(keys.enforcing());
    assert!(keys.verify(&issued.token, at(1)).is_ok());
    store.revoke(&issued.record.id, at(1)).unwrap();
    keys.refresh(at(1));
    assert!(
        keys.enforcing(),
        "revoking every token must refuse everyone"
    );

    let required = Keyring::open(&dir.path().join("none.json"), true, RELOAD_INTERVAL, at(1));
    assert!(required.unwrap().enforcing());
}

#[test]
fn the_reload_interval_bounds_how_often_the_file_is_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = TokenStore::new(&path);
    let issued = store.create(Role::Read, "", None, at(1)).unwrap();
    let keys = Keyring::open(&path, false, Duration::from_secs(3600), at(1)).unwrap();
    store.revoke(&issued.record.id, at(1)).unwrap();
    keys.refresh(at(1));
    assert!(
        keys.verify(&issued.token, at(1)).is_ok(),
        "looked at too soon"
    );
    keys.reload(at(1));
    assert_eq!(keys.verify(&issued.token, at(1)), Err(Refusal::Revoked));
}

#[test]
fn concurrent_writers_keep_every_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                // A handle per thread, as separate processes would have.
                let store = TokenStore::new(&path);
                (0..10)
                    .map(|i| {
                        store
                            .create(Role::Read, &format!("t{t}-{i}"), None, at(1))
                            .unwrap()
                            .record
                            .id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut created: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    created.sort();
    let mut stored: Vec<String> = TokenStore::new(&path)
        .load()
        .unwrap()
        .tokens
        .into_iter()
        .map(|t| t.id)
        .collect();
    stored.sort();
    assert_eq!(stored.len(), 40);
    assert_eq!(stored, created);
}

#[test]
fn a_corrupt_file_is_an_error_naming_it_and_refuses_everyone_when_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = TokenStore::new(&path);
    let issued = store.create(Role::Admin, "", None, at(1)).unwrap();
    let keys = keyring(&path, at(1));

    fs::write(&path, b"{\"version\": 1, \"tokens\": [").unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("tokens file {} is not valid: ", path.display())),
        "{err}"
    );
    let err = Keyring::open(&path, false, RELOAD_INTERVAL, at(1)).unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()));
    let err = store.create(Role::Read, "", None, at(1)).unwrap_err();
    assert!(err.to_string().contains("is not valid"), "{err}");

    keys.refresh(at(1));
    assert_eq!(keys.verify(&issued.token, at(1)), Err(Refusal::Unknown));
    assert!(keys.enforcing());

    fs::write(&path, b"{\"version\": 2, \"tokens\": []}").unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.ends_with("version 2 (this Floe reads version 1)"),
        "{err}"
    );
    fs::write(&path, b"{\"version\": 1, \"tokenz\": []}").unwrap();
    assert!(
        store
            .load()
            .unwrap_err()
            .to_string()
            .contains("unknown field `tokenz`")
    );
}

#[test]
fn names_are_checked() {
    assert!(check_name("ci deploy").is_ok());
    assert!(check_name("bad\nname").is_err());
    assert!(check_name(&"x".repeat(101)).is_err());
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokens.json"));
    assert!(matches!(
        store.create(Role::Read, "a\u{7}", None, at(1)),
        Err(AuthError::Invalid(_))
    ));
    assert!(!store.path().exists(), "a refused token writes nothing");
}
