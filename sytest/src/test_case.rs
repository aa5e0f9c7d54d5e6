//! One test of the suite ([`Test`]) and the [`tests!`](crate::tests) macro with which a
//! scenario file declares its tests. Below the scenarios and [`crate::registry`], which lists
//! them all; the registry re-exports [`Test`] and [`TestFuture`].

use std::future::Future;
use std::pin::Pin;

use crate::fixture::Ctx;

/// The future a test returns.
pub type TestFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// One registered test: `group/name` and the async function that runs it.
#[derive(Clone, Copy)]
pub struct Test {
    /// The scenario file's group, e.g. `accounts`.
    pub group: &'static str,
    /// The test's name, stating the behaviour it checks.
    pub name: &'static str,
    /// Runs the test with fresh fixtures.
    pub run: fn(Ctx) -> TestFuture,
}

impl Test {
    /// `group/name`, as printed and matched by `--filter`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.group, self.name)
    }
}

/// Declares a scenario file's tests: `tests!("group": fn_a, fn_b);` defines `pub const TESTS`.
///
/// Each function is `async fn name(ctx: Ctx) -> anyhow::Result<()>`.
#[macro_export]
macro_rules! tests {
    ($group:literal: $($name:ident),* $(,)?) => {
        /// The tests of this file, in declaration order.
        pub const TESTS: &[$crate::test_case::Test] = &[
            $($crate::test_case::Test {
                group: $group,
                name: stringify!($name),
                run: |ctx| -> $crate::test_case::TestFuture { Box::pin($name(ctx)) },
            }),*
        ];
    };
}
