//! `gatehouse user ...` and `gatehouse revoke ...`: each command is one admin
//! operation, run through [`AdminClient`] wherever the store is.

use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;

use serde::Serialize;

use super::client::AdminClient;
use super::{CliError, RevokeCommand, RolesCommand, UserCommand};
use crate::admin::operations::{
    ChangeRole, CreateUser, DeleteUser, ListRoles, ListUsers, RevokeToken, RevokeUserTokens, ShowUser,
    UpdateUser, UserPatch,
};
use crate::roles::Role;

pub(super) fn user_command(config_path: &Path, command: UserCommand) -> Result<(), CliError> {
    // A bad role name is refused before the store is opened or the API called.
    if let UserCommand::Roles(RolesCommand::Add { role, .. } | RolesCommand::Remove { role, .. }) = &command {
        Role::parse(role)?;
    }
    let admin = AdminClient::connect(config_path)?;
    let patch = |user: &str, patch: UserPatch| -> Result<(), CliError> {
        print_answer(&admin.call(&UpdateUser { id: admin.user_id(user)?, patch })?);
        Ok(())
    };
    match command {
        UserCommand::Add { email, username, admin: is_admin } => {
            let password = read_password()?;
            print_answer(&admin.call(&CreateUser { email, username, password, is_admin })?);
        }
        UserCommand::List => {
            let users = admin.call(&ListUsers)?;
            say!(
                "{:>6}  {:<32} {:<20} {:<5} {:<7} {}",
                "ID",
                "EMAIL",
                "USERNAME",
                "ADMIN",
                "BLOCKED",
                "ROLES"
            );
            for u in users {
                let roles = crate::roles::header_value(&u.roles);
                say!(
                    "{:>6}  {:<32} {:<20} {:<5} {:<7} {roles}",
                    u.id,
                    u.email,
                    u.username,
                    u.is_admin,
                    u.blocked
                );
            }
        }
        UserCommand::Show { user } => print_answer(&admin.call(&ShowUser { id: admin.user_id(&user)? })?),
        UserCommand::SetAdmin { user, admin: flag } => {
            patch(&user, UserPatch { is_admin: Some(flag), blocked: None })?;
        }
        UserCommand::Block { user } => patch(&user, UserPatch { is_admin: None, blocked: Some(true) })?,
        UserCommand::Unblock { user } => patch(&user, UserPatch { is_admin: None, blocked: Some(false) })?,
        UserCommand::Delete { user } => {
            print_answer(&admin.call(&DeleteUser { id: admin.user_id(&user)? })?);
        }
        UserCommand::Roles(RolesCommand::List { user }) => {
            print_answer(&admin.call(&ListRoles { id: admin.user_id(&user)? })?);
        }
        UserCommand::Roles(RolesCommand::Add { user, role }) => change_role(&admin, &user, &role, true)?,
        UserCommand::Roles(RolesCommand::Remove { user, role }) => change_role(&admin, &user, &role, false)?,
    }
    Ok(())
}

fn change_role(admin: &AdminClient, user: &str, role: &str, add: bool) -> Result<(), CliError> {
    let role = Role::parse(role)?;
    print_answer(&admin.call(&ChangeRole { id: admin.user_id(user)?, role, add })?);
    Ok(())
}

pub(super) fn revoke_command(config_path: &Path, command: RevokeCommand) -> Result<(), CliError> {
    let admin = AdminClient::connect(config_path)?;
    match command {
        RevokeCommand::Token => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .map_err(|source| CliError::Stdin { what: "token", source })?;
            print_answer(&admin.call(&RevokeToken { token: token.trim().to_owned() })?);
        }
        RevokeCommand::User { user } => {
            print_answer(&admin.call(&RevokeUserTokens { id: admin.user_id(&user)? })?);
        }
    }
    Ok(())
}

/// Prints an answer as indented JSON. It goes through `serde_json::Value`
/// so that keys come out sorted, as this output always has.
fn print_answer(answer: &impl Serialize) {
    let value = serde_json::to_value(answer).unwrap_or_default();
    say!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

/// Reads a new password: prompted twice on a terminal, else one line of stdin.
fn read_password() -> Result<String, CliError> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(CliError::Prompt)?;
        let second = rpassword::prompt_password("Repeat password: ").map_err(CliError::Prompt)?;
        if first != second {
            return Err(CliError::PasswordMismatch);
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|source| CliError::Stdin { what: "password", source })?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}
