//! [`FixedSql`]: marks a statement whose SQL never varies so that its prepared statement is
//! reused. Shared by the query modules, the statement macros and the SQLite writer, so it sits
//! below all of them.

/// A statement whose SQL never varies with its values, marked so that its prepared statement
/// is reused. Diesel never reuses an UPDATE's (a changeset's SQL may depend on its values);
/// wrap only updates whose changeset is fixed, such as `x = x + ?`.
///
/// `K` says how the statement cache finds it: [`BySqlText`] (built for each lookup), or a
/// marker type of the statement's own (see [`CacheKey`]), found by type without building any
/// SQL; that is for the statements of the hottest write, the append of a message.
pub(crate) struct FixedSql<Q, K = BySqlText>(pub(crate) Q, std::marker::PhantomData<K>);

/// How the statement cache finds a [`FixedSql`]. A marker type with `BY_TYPE` must name one
/// statement only: two statements sharing it would share one prepared statement.
pub(crate) trait CacheKey: 'static {
    /// Whether the statement is found by this type rather than by its SQL text.
    const BY_TYPE: bool = true;
}

/// Find the statement by its SQL text.
pub(crate) struct BySqlText;

impl CacheKey for BySqlText {
    const BY_TYPE: bool = false;
}

impl<Q> FixedSql<Q> {
    /// `query`, found in the cache by its SQL text.
    pub(crate) fn new(query: Q) -> Self {
        FixedSql(query, std::marker::PhantomData)
    }
}

impl<Q, K: CacheKey> FixedSql<Q, K> {
    /// `query`, found in the cache by the marker type `K`.
    pub(crate) fn named(query: Q) -> Self {
        FixedSql(query, std::marker::PhantomData)
    }
}

impl<Q, K, DB> diesel::query_builder::QueryFragment<DB> for FixedSql<Q, K>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q, K: CacheKey> diesel::query_builder::QueryId for FixedSql<Q, K> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = K::BY_TYPE;
}

impl<Q: diesel::query_builder::Query, K> diesel::query_builder::Query for FixedSql<Q, K> {
    type SqlType = Q::SqlType;
}

impl<Q, K, Conn> diesel::RunQueryDsl<Conn> for FixedSql<Q, K> {}
