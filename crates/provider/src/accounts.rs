//! Viewer accounts and their sessions.
//!
//! Passwords are stored only as Argon2id PHC strings. A session is a random
//! 256-bit token that lives in the viewer's cookie; the database keeps only its
//! SHA-256, so a copy of the database does not let anyone sign in.
//!
//! Password hashing is deliberately slow (tens of milliseconds): it is kept apart
//! from the database functions so a server can run it off the database lock.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng as HashRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use rand::rngs::OsRng;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::db::DbError;

pub const MAX_NAME_LEN: usize = 64;
/// Longer passwords are refused: hashing cost must stay bounded.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME_SECS: u64 = 30 * 24 * 60 * 60;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "{0:?} is not a usable viewer name: use 1 to {MAX_NAME_LEN} characters, no spaces at the ends, no control characters"
    )]
    InvalidName(String),
    #[error("the password is empty or longer than {MAX_PASSWORD_LEN} bytes")]
    InvalidPassword,
    #[error("a viewer named {0:?} already exists")]
    DuplicateName(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for AccountError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(DbError::Sqlite(e))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub created_at: u64,
}

pub fn validate_name(name: &str) -> Result<(), AccountError> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName(name.chars().take(80).collect()))
    }
}

pub fn validate_password(password: &str) -> Result<(), AccountError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        Err(AccountError::InvalidPassword)
    } else {
        Ok(())
    }
}

/// An Argon2id PHC string for `password` with a fresh salt. Slow by design.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    validate_password(password)?;
    let salt = SaltString::generate(&mut HashRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches `phc`. Slow by design. With no hash (an unknown
/// viewer) it still spends the same work, so timing does not tell which names exist.
pub fn check_password(phc: Option<&str>, password: &str) -> bool {
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy = DECOY.get_or_init(|| {
        hash_password("decoy password for unknown names").expect("hashing a fixed password works")
    });
    let known = phc.is_some();
    let Ok(parsed) = PasswordHash::new(phc.unwrap_or(decoy)) else {
        return false;
    };
    let password = if password.len() > MAX_PASSWORD_LEN {
        &password[..0]
    } else {
        password
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    known && matches
}

/// Adds a viewer whose password is already hashed ([`hash_password`]).
pub fn add_user(
    conn: &Connection,
    name: &str,
    password_hash: &str,
    now: u64,
) -> Result<(), AccountError> {
    validate_name(name)?;
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
        params![name, password_hash, now as i64],
    )?;
    if inserted == 0 {
        return Err(AccountError::DuplicateName(name.into()));
    }
    Ok(())
}

pub fn list_users(conn: &Connection) -> Result<Vec<User>, AccountError> {
    let mut stmt = conn.prepare("SELECT name, created_at FROM users ORDER BY name")?;
    let users = stmt
        .query_map([], |row| {
            Ok(User {
                name: row.get(0)?,
                created_at: row.get::<_, i64>(1)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(users)
}

pub fn password_hash_of(conn: &Connection, name: &str) -> Result<Option<String>, AccountError> {
    Ok(conn
        .prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()?)
}

/// A session token as it travels in the cookie: 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

impl SessionToken {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Accepts only what [`SessionToken::generate`] makes; anything else is no session.
    pub fn parse(text: &str) -> Option<Self> {
        let well_formed = text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

pub fn create_session(
    conn: &Connection,
    name: &str,
    now: u64,
) -> Result<SessionToken, AccountError> {
    let token = SessionToken::generate();
    conn.execute(
        "INSERT INTO sessions (token_sha256, user_name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            &token.digest()[..],
            name,
            now as i64,
            now.saturating_add(SESSION_LIFETIME_SECS) as i64
        ],
    )?;
    Ok(token)
}

/// The viewer a token signs in, if the session exists and has not expired.
pub fn session_viewer(
    conn: &Connection,
    token: &SessionToken,
    now: u64,
) -> Result<Option<String>, AccountError> {
    Ok(conn
        .prepare_cached(
            "SELECT user_name FROM sessions WHERE token_sha256 = ?1 AND expires_at > ?2",
        )?
        .query_row(params![&token.digest()[..], now as i64], |row| row.get(0))
        .optional()?)
}

pub fn end_session(conn: &Connection, token: &SessionToken) -> Result<(), AccountError> {
    conn.execute(
        "DELETE FROM sessions WHERE token_sha256 = ?1",
        [&token.digest()[..]],
    )?;
    Ok(())
}

/// Deletes expired sessions; returns how many.
pub fn purge_expired_sessions(conn: &Connection, now: u64) -> Result<usize, AccountError> {
    Ok(conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now as i64])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db;

    #[test]
    fn passwords_verify_only_when_right() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct horse"));
        assert!(check_password(Some(&hash), "correct horse"));
        assert!(!check_password(Some(&hash), "correct horsf"));
        assert!(!check_password(None, "correct horse"));
        assert!(!check_password(Some("not a phc string"), "x"));
        assert!(!check_password(Some(&hash), &"x".repeat(5000)));
        assert!(matches!(
            hash_password(""),
            Err(AccountError::InvalidPassword)
        ));
    }

    #[test]
    fn users_and_sessions() {
        let conn = db::open_in_memory().unwrap();
        add_user(&conn, "ada", "$argon2id$fake", 5).unwrap();
        assert!(matches!(
            add_user(&conn, "ada", "$argon2id$fake", 6),
            Err(AccountError::DuplicateName(_))
        ));
        assert!(matches!(
            add_user(&conn, " ada", "h", 6),
            Err(AccountError::InvalidName(_))
        ));
        assert!(matches!(
            add_user(&conn, "", "h", 6),
            Err(AccountError::InvalidName(_))
        ));
        assert_eq!(
            list_users(&conn).unwrap(),
            [User {
                name: "ada".into(),
                created_at: 5
            }]
        );

        let token = create_session(&conn, "ada", 1000).unwrap();
        assert_eq!(SessionToken::parse(token.as_str()), Some(token.clone()));
        assert_eq!(
            session_viewer(&conn, &token, 1001).unwrap().as_deref(),
            Some("ada")
        );
        let expiry = 1000 + SESSION_LIFETIME_SECS;
        assert_eq!(
            session_viewer(&conn, &token, expiry).unwrap(),
            None,
            "expired"
        );
        let other = SessionToken::parse(&"0".repeat(64)).unwrap();
        assert_eq!(session_viewer(&conn, &other, 1001).unwrap(), None);

        end_session(&conn, &token).unwrap();
        assert_eq!(session_viewer(&conn, &token, 1001).unwrap(), None);

        create_session(&conn, "ada", 0).unwrap();
        assert_eq!(
            purge_expired_sessions(&conn, SESSION_LIFETIME_SECS).unwrap(),
            1
        );
    }

    #[test]
    fn malformed_tokens_are_no_session() {
        for bad in ["", "abc", &"G".repeat(64), &"A".repeat(64), &"a".repeat(65)] {
            assert_eq!(SessionToken::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_database_holds_no_usable_token() {
        let conn = db::open_in_memory().unwrap();
        add_user(&conn, "ada", "h", 0).unwrap();
        let token = create_session(&conn, "ada", 0).unwrap();
        let stored: Vec<u8> = conn
            .query_row("SELECT token_sha256 FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_ne!(hex::encode(&stored), token.as_str());
    }
}
