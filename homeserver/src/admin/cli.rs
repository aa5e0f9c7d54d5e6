//! `parley admin …`: the admin operations from the command line. Every operation but
//! `make-admin` goes through the running server's admin API (so it is authenticated, audited
//! and seen by every process at once); `make-admin` writes the flag on the database directly,
//! which is how the first admin is made.

use std::io::BufRead;

use clap::{Args, Subcommand};
use parley_client_api::admin::{
    AclRuleRequest, AddAclRule, AuditLog, AuditLogRequest, CreateRegistrationToken,
    CreateTokenRequest, CreateUser, CreateUserRequest, DeactivateUser, GetServerAcl, GetUser,
    ListRegistrationTokens, ListUsers, ListUsersRequest, OutboxStatus, RemoveAclRule,
    ResetPassword, ResetPasswordRequest, RetryDestination, RevokeRegistrationToken, RunRetention,
    RunRetentionRequest, SetAdmin, SetAdminRequest,
};
use parley_client_api::endpoint::{Empty, NoQuery};
use parley_client_api::{Client, Endpoint};
use serde::Serialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Where the admin API is and who calls it.
#[derive(Debug, Args)]
pub struct Connection {
    /// Base URL of the homeserver.
    #[arg(
        long,
        env = "PARLEY_ADMIN_URL",
        default_value = "http://127.0.0.1:8008"
    )]
    pub url: String,
    /// An access token of an admin user (log in as the admin to get one).
    #[arg(long, env = "PARLEY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// An operation of the admin API.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Users: list, show, create, reset-password, set-admin, deactivate.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Registration tokens: create, list, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The server ACL: show, add, remove.
    #[command(subcommand)]
    Acl(AclCommand),
    /// The federation outbox: status, retry.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Run the retention jobs now.
    Retention {
        /// Delete delivered messages older than this many days (default: the configured
        /// `retention.messages_ms`, if set).
        #[arg(long)]
        messages_older_than_days: Option<u64>,
    },
    /// The audit log, newest first.
    Audit {
        /// Entries with an id below this.
        #[arg(long)]
        before: Option<i64>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `parley admin users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List local users.
    List {
        /// Only ids containing this.
        #[arg(long)]
        search: Option<String>,
        /// Users after this user id.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One user and their devices.
    Show { user_id: String },
    /// Create a user; the password is read from the first line of standard input.
    Create {
        username: String,
        /// Make the user an admin too.
        #[arg(long)]
        admin: bool,
    },
    /// Set a new password, read from the first line of standard input.
    ResetPassword {
        user_id: String,
        /// Keep the user's sessions (by default they end).
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Grant (`true`) or withdraw (`false`) the admin flag.
    SetAdmin {
        user_id: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
    /// Deactivate a user for good.
    Deactivate { user_id: String },
}

/// `parley admin tokens …`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a registration token (printed once).
    Create {
        /// Registrations it may complete (unlimited if absent).
        #[arg(long)]
        uses: Option<u32>,
        /// Days until it stops working (never if absent).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List registration tokens.
    List,
    /// Revoke a registration token by id.
    Revoke { token_id: String },
}

/// `parley admin acl …`.
#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// The config file's rules and the runtime ones.
    Show,
    /// Add a runtime rule: `allow` or `deny`, then a server-name glob.
    Add { rule: String, pattern: String },
    /// Remove a runtime rule.
    Remove { rule: String, pattern: String },
}

/// `parley admin outbox …`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// What is queued per destination.
    Status,
    /// Retry a destination now.
    Retry { destination: String },
}

/// Runs `command` against the server at `conn`, printing the answer as JSON.
pub async fn run(conn: Connection, command: ApiCommand) -> anyhow::Result<()> {
    let mut client = Client::new(conn.url.trim_end_matches('/'));
    let Some(token) = conn.token else {
        anyhow::bail!("an admin access token is needed: --token or PARLEY_ADMIN_TOKEN");
    };
    client.set_access_token(Some(token));
    let answer = match command {
        ApiCommand::Users(c) => users(&client, c).await?,
        ApiCommand::Tokens(c) => tokens(&client, c).await?,
        ApiCommand::Acl(c) => acl(&client, c).await?,
        ApiCommand::Outbox(OutboxCommand::Status) => {
            call::<OutboxStatus>(&client, &(), &NoQuery {}).await?
        }
        ApiCommand::Outbox(OutboxCommand::Retry { destination }) => {
            let path = json!({ "destination": destination });
            raw::<RetryDestination>(&client, path, &Empty {}).await?
        }
        ApiCommand::Retention {
            messages_older_than_days,
        } => {
            let req = RunRetentionRequest {
                messages_older_than_ms: messages_older_than_days
                    .map(|d| d.saturating_mul(24 * 3_600_000)),
            };
            call::<RunRetention>(&client, &(), &req).await?
        }
        ApiCommand::Audit { before, limit } => {
            call::<AuditLog>(&client, &(), &AuditLogRequest { before, limit }).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

async fn users(client: &Client, command: UsersCommand) -> anyhow::Result<Value> {
    Ok(match command {
        UsersCommand::List {
            search,
            from,
            limit,
        } => {
            let req = ListUsersRequest {
                search,
                from,
                limit,
            };
            call::<ListUsers>(client, &(), &req).await?
        }
        UsersCommand::Show { user_id } => {
            raw::<GetUser>(client, user_json(&user_id), &NoQuery {}).await?
        }
        UsersCommand::Create { username, admin } => {
            let password = read_password()?;
            let req = CreateUserRequest {
                username,
                password: password.to_string(),
                admin,
            };
            call::<CreateUser>(client, &(), &req).await?
        }
        UsersCommand::ResetPassword {
            user_id,
            keep_sessions,
        } => {
            let password = read_password()?;
            let req = ResetPasswordRequest {
                password: password.to_string(),
                logout_devices: !keep_sessions,
            };
            raw::<ResetPassword>(client, user_json(&user_id), &req).await?
        }
        UsersCommand::SetAdmin { user_id, admin } => {
            raw::<SetAdmin>(client, user_json(&user_id), &SetAdminRequest { admin }).await?
        }
        UsersCommand::Deactivate { user_id } => {
            raw::<DeactivateUser>(client, user_json(&user_id), &Empty {}).await?
        }
    })
}

async fn tokens(client: &Client, command: TokensCommand) -> anyhow::Result<Value> {
    Ok(match command {
        TokensCommand::Create {
            uses,
            expires_in_days,
        } => {
            let now = crate::clock::now_ms();
            let req = CreateTokenRequest {
                uses_allowed: uses,
                expires_ts: expires_in_days.map(|d| now + u64::from(d) * 86_400_000),
            };
            call::<CreateRegistrationToken>(client, &(), &req).await?
        }
        TokensCommand::List => call::<ListRegistrationTokens>(client, &(), &NoQuery {}).await?,
        TokensCommand::Revoke { token_id } => {
            let path = json!({ "token_id": token_id });
            raw::<RevokeRegistrationToken>(client, path, &NoQuery {}).await?
        }
    })
}

async fn acl(client: &Client, command: AclCommand) -> anyhow::Result<Value> {
    Ok(match command {
        AclCommand::Show => call::<GetServerAcl>(client, &(), &NoQuery {}).await?,
        AclCommand::Add { rule, pattern } => {
            call::<AddAclRule>(client, &(), &AclRuleRequest { pattern, rule }).await?
        }
        AclCommand::Remove { rule, pattern } => {
            call::<RemoveAclRule>(client, &(), &AclRuleRequest { pattern, rule }).await?
        }
    })
}

fn user_json(user_id: &str) -> Value {
    json!({ "user_id": user_id })
}

/// Calls `E` and gives its answer as JSON.
async fn call<E: Endpoint>(
    client: &Client,
    path: &E::Path,
    req: &E::Request,
) -> anyhow::Result<Value> {
    let answer = client.call::<E>(path, req).await?;
    Ok(serde_json::to_value(answer)?)
}

/// Calls `E` with path parameters given as a JSON object of strings (checked by the server).
async fn raw<E: Endpoint>(client: &Client, path: Value, req: &E::Request) -> anyhow::Result<Value>
where
    E::Request: Serialize,
{
    let params: Vec<String> = parley_client_api::endpoint::path_params(E::PATH)
        .into_iter()
        .map(|name| {
            path.get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let refs: Vec<&str> = params.iter().map(String::as_str).collect();
    let answer = client.call_with_raw_path::<E>(&refs, req).await?;
    Ok(serde_json::to_value(answer)?)
}

/// The first line of standard input, without its line end.
fn read_password() -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        anyhow::bail!("give the password on the first line of standard input");
    }
    Ok(trimmed)
}
