//! Statements several writes share, written once for either backend's connection (they
//! expand inside a write body; `?` returns the store error).

/// Takes `n` new stream positions inside the current transaction and returns the first.
/// The row update serialises writers on PostgreSQL, so positions commit in order.
macro_rules! take_positions {
    ($c:expr, $n:expr) => {{
        use $crate::schema::stream_position;
        let last: i64 = $crate::fixed_sql::FixedSql::new(
            diesel::update(stream_position::table.find(1))
                .set(stream_position::pos.eq(stream_position::pos + $n))
                .returning(stream_position::pos),
        )
        .get_result($c)
        .await?;
        last - $n + 1
    }};
}

/// Ends the current membership in `$group_id` of each `(user_id, device_id)` of `$devices`
/// at stream position `$pos` (they receive events up to it).
macro_rules! leave_group {
    ($c:expr, $group_id:expr, $devices:expr, $pos:expr) => {
        for (user_id, device_id) in $devices {
            use $crate::schema::memberships;
            diesel::update(
                memberships::table
                    .filter(memberships::group_id.eq($group_id))
                    .filter(memberships::user_id.eq(user_id))
                    .filter(memberships::device_id.eq(device_id))
                    .filter(memberships::left_pos.is_null()),
            )
            .set(memberships::left_pos.eq(Some($pos)))
            .execute($c)
            .await?;
        }
    };
}

/// Starts a membership in `$group_id` for each `(user_id, device_id, leaf_index)` of
/// `$members` at stream position `$pos` (they receive events after it).
macro_rules! join_group {
    ($c:expr, $group_id:expr, $members:expr, $pos:expr) => {
        for (user_id, device_id, leaf_index) in $members {
            use $crate::schema::memberships;
            diesel::insert_into(memberships::table)
                .values((
                    memberships::group_id.eq($group_id),
                    memberships::user_id.eq(user_id),
                    memberships::device_id.eq(device_id),
                    memberships::leaf_index.eq(leaf_index),
                    memberships::joined_pos.eq($pos),
                ))
                .execute($c)
                .await?;
        }
    };
}
