//! `spate user list|set|delete`: users' SCRAM credentials through DescribeUserScramCredentials
//! and AlterUserScramCredentials, as Kafka's `kafka-configs --entity-type users
//! --alter --add-config 'SCRAM-SHA-256=[password=...]'` manages them: the password is salted
//! and hashed here (PBKDF2, a random 32-byte salt) and only the salted password is sent.

use crate::auth::scram::Mechanism;

use super::api;
use super::error::{Error, Result};
use super::output::{Table, print_json, write_stdout};
use super::{Common, UserCommand};

pub fn run(common: &Common, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::List => list(common),
        UserCommand::Set {
            user,
            password,
            mechanisms,
            iterations,
        } => set(common, &user, &password, &mechanisms, iterations),
        UserCommand::Delete { user, mechanisms } => delete(common, &user, &mechanisms),
    }
}

fn mechanisms_of(names: &[String]) -> Result<Vec<Mechanism>> {
    if names.is_empty() {
        return Ok(vec![Mechanism::Sha256, Mechanism::Sha512]);
    }
    names
        .iter()
        .map(|n| {
            Mechanism::from_name(n).ok_or_else(|| {
                Error::other(format!(
                    "--mechanism '{n}' is not SCRAM-SHA-256 or SCRAM-SHA-512"
                ))
            })
        })
        .collect()
}

fn list(common: &Common) -> Result<()> {
    let mut client = common.client()?;
    let users = api::describe_scram(&mut client)?;
    let name = |m: i8| Mechanism::from_id(m).map_or("unknown", Mechanism::name);
    if common.json {
        let out: Vec<serde_json::Value> = users
            .iter()
            .map(|(u, c)| {
                serde_json::json!({
                    "user": u,
                    "credentials": c.iter().map(|(m, i)| serde_json::json!({"mechanism": name(*m), "iterations": i})).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&out);
    }
    let mut t = Table::new(&["USER", "MECHANISM", "ITERATIONS"]);
    for (u, creds) in &users {
        for (m, i) in creds {
            t.row(vec![u.clone(), name(*m).to_string(), i.to_string()]);
        }
    }
    write_stdout(&t.render())
}

fn set(
    common: &Common,
    user: &str,
    password: &str,
    mechanisms: &[String],
    iterations: i32,
) -> Result<()> {
    let password = if password == "-" {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Error::other(format!("reading the password from stdin: {e}")))?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        password.to_string()
    };
    if password.is_empty() {
        return Err(Error::other("the password is empty"));
    }
    let rounds = u32::try_from(iterations)
        .map_err(|_| Error::other(format!("--iterations {iterations} is negative")))?;
    let mut upsert = Vec::new();
    for m in mechanisms_of(mechanisms)? {
        let mut salt = vec![0u8; 32];
        getrandom::getrandom(&mut salt)
            .map_err(|e| Error::other(format!("no randomness for a salt: {e}")))?;
        let salted = m.salted_password(password.as_bytes(), &salt, rounds);
        upsert.push((m.id(), iterations, salt, salted));
    }
    let mut client = common.client()?;
    api::alter_scram(&mut client, user, &upsert, &[])?;
    let names: Vec<&str> = upsert
        .iter()
        .filter_map(|(m, ..)| Mechanism::from_id(*m).map(Mechanism::name))
        .collect();
    if common.json {
        return print_json(&serde_json::json!({"user": user, "set": names}));
    }
    write_stdout(&format!(
        "Set {} credentials of user {user}.\n",
        names.join(" and ")
    ))
}

fn delete(common: &Common, user: &str, mechanisms: &[String]) -> Result<()> {
    let mut client = common.client()?;
    let wanted = mechanisms_of(mechanisms)?;
    // Without --mechanism: the mechanisms the user has.
    let ids: Vec<i8> = if mechanisms.is_empty() {
        api::describe_scram(&mut client)?
            .into_iter()
            .find(|(u, _)| u == user)
            .map(|(_, c)| c.into_iter().map(|(m, _)| m).collect())
            .unwrap_or_default()
    } else {
        wanted.iter().map(|m| m.id()).collect()
    };
    if ids.is_empty() {
        return Err(Error::other(format!(
            "user '{user}' has no SCRAM credentials"
        )));
    }
    api::alter_scram(&mut client, user, &[], &ids)?;
    if common.json {
        return print_json(&serde_json::json!({"user": user, "deleted": ids}));
    }
    write_stdout(&format!("Removed the SCRAM credentials of user {user}.\n"))
}
