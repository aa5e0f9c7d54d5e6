//! Registration modes (`[registration] mode = open | closed | token`).

use parley_client_api::accounts::{Register, RegisterRequest};

use crate::check::{expect_eq, expect_error, expect_ok};
use crate::fixture::Ctx;
use crate::scenarios::PASSWORD;

crate::tests!("registration":
    closed_registration_is_403_forbidden,
    token_registration_refuses_missing_and_wrong_tokens,
    token_registration_accepts_a_listed_token,
);

fn request(username: &str, token: Option<&str>) -> RegisterRequest {
    RegisterRequest {
        username: username.to_owned(),
        password: PASSWORD.into(),
        device_name: Some("phone".into()),
        registration_token: token.map(str::to_owned),
    }
}

const TOKEN_MODE: &str =
    "[registration]\nmode = \"token\"\ntokens = [\"let-me-in\", \"second-door\"]";

async fn closed_registration_is_403_forbidden(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx
        .server("hs1")
        .config("[registration]\nmode = \"closed\"")
        .start()
        .await?;
    let name = ctx.user("yan");
    expect_error(
        hs.client().register(&name, PASSWORD).await,
        403,
        "P_FORBIDDEN",
    )?;
    // Not even with a token.
    expect_error(
        hs.client()
            .call::<Register>(&(), &request(&name, Some("let-me-in")))
            .await,
        403,
        "P_FORBIDDEN",
    )?;
    // Nothing was created.
    expect_error(
        hs.client().login(&name, PASSWORD, None).await,
        403,
        "P_FORBIDDEN",
    )?;
    Ok(())
}

async fn token_registration_refuses_missing_and_wrong_tokens(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").config(TOKEN_MODE).start().await?;
    let name = ctx.user("zoe");
    for token in [None, Some("wrong"), Some(""), Some("LET-ME-IN")] {
        expect_error(
            hs.client()
                .call::<Register>(&(), &request(&name, token))
                .await,
            403,
            "P_FORBIDDEN",
        )
        .map_err(|e| anyhow::anyhow!("registration_token {token:?}: {e}"))?;
    }
    Ok(())
}

async fn token_registration_accepts_a_listed_token(mut ctx: Ctx) -> anyhow::Result<()> {
    let hs = ctx.server("hs1").config(TOKEN_MODE).start().await?;
    for token in ["let-me-in", "second-door"] {
        let session = expect_ok(
            hs.client()
                .call::<Register>(&(), &request(&ctx.user("abe"), Some(token)))
                .await,
            &format!("register with token {token:?}"),
        )?;
        let mut client = hs.client();
        client.set_access_token(Some(session.access_token));
        let devices = expect_ok(client.devices().await, "devices")?.devices;
        expect_eq(
            &devices.first().and_then(|d| d.display_name.as_deref()),
            &Some("phone"),
            "device display_name",
        )?;
    }
    Ok(())
}
