//! The hub's view of a group's leaves (docs/protocol.md#hub-rule-4): leaf-index tracking with RFC 9420
//! §12.3 rules, matching openmls.

/// Why a commit's roster change was refused (400 `P_INVALID_MESSAGE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// A Remove names a leaf that is blank or outside the tree.
    #[error("the commit removes leaf {0}, which holds no member")]
    RemoveOfBlankLeaf(u32),
    /// A leaf is removed twice.
    #[error("the commit removes leaf {0} twice")]
    DuplicateRemove(u32),
    /// An Add names a device that stays in (or is added twice to) the group.
    #[error("the commit adds {0}, which is already a member")]
    DuplicateMember(String),
    /// The bundle's declared `adds` are not the commit's Adds.
    #[error("the bundle's adds {declared:?} do not match the commit's adds {actual:?}")]
    AddsMismatch {
        /// Declared in the bundle.
        declared: Vec<String>,
        /// Found in the commit.
        actual: Vec<String>,
    },
    /// The bundle's declared `removes` are not the members the commit removes.
    #[error("the bundle's removes {declared:?} do not match the commit's removes {actual:?}")]
    RemovesMismatch {
        /// Declared in the bundle.
        declared: Vec<String>,
        /// Found in the commit (identities of the removed leaves).
        actual: Vec<String>,
    },
}

/// The hub's view of a group's leaves (docs/protocol.md#hub-rule-4): `leaves[i]` is the identity
/// (`@user:server/DEVICE`) at leaf `i`, `None` for a blank leaf. Trailing blank leaves are
/// always truncated, so the last leaf is occupied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// Identity per leaf index; `None` is a blank leaf.
    pub leaves: Vec<Option<String>>,
}

impl Roster {
    /// A new group's roster: its creator at leaf 0.
    #[cfg(test)]
    pub fn new(creator: impl Into<String>) -> Self {
        Self {
            leaves: vec![Some(creator.into())],
        }
    }

    /// A roster from stored leaves (trailing blanks are truncated).
    pub fn from_leaves(leaves: Vec<Option<String>>) -> Self {
        let mut roster = Self { leaves };
        roster.truncate();
        roster
    }

    /// The leaf index of `identity`, if it is a member.
    pub fn leaf_of(&self, identity: &str) -> Option<u32> {
        self.leaves
            .iter()
            .position(|l| l.as_deref() == Some(identity))
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The member at `leaf`, if that leaf is occupied.
    pub fn identity_at(&self, leaf: u32) -> Option<&str> {
        self.leaves.get(leaf as usize).and_then(|l| l.as_deref())
    }

    /// The members as `(leaf, identity)` in leaf order.
    #[cfg(test)]
    pub fn members(&self) -> Vec<(u32, &str)> {
        self.leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((u32::try_from(i).ok()?, l.as_deref()?)))
            .collect()
    }

    /// Checks that `removes` name distinct occupied leaves and `adds` are distinct devices that
    /// are not members after the removes. Call before [`Roster::apply_commit`].
    pub fn check_commit(&self, removes: &[u32], adds: &[String]) -> Result<(), RosterError> {
        let mut removed = Vec::with_capacity(removes.len());
        for &leaf in removes {
            if self.identity_at(leaf).is_none() {
                return Err(RosterError::RemoveOfBlankLeaf(leaf));
            }
            if removed.contains(&leaf) {
                return Err(RosterError::DuplicateRemove(leaf));
            }
            removed.push(leaf);
        }
        for (i, add) in adds.iter().enumerate() {
            let stays = self
                .leaf_of(add)
                .is_some_and(|leaf| !removed.contains(&leaf));
            if stays || adds[..i].contains(add) {
                return Err(RosterError::DuplicateMember(add.clone()));
            }
        }
        Ok(())
    }

    /// Checks the commit's resolved delta ([`CommitDelta`](super::CommitDelta)) against the
    /// bundle's declared `adds`/`removes` (identities `@user:server/DEVICE`), compared as sets,
    /// and with [`Roster::check_commit`].
    pub fn check_declared(
        &self,
        removes: &[u32],
        adds: &[String],
        declared_removes: &[String],
        declared_adds: &[String],
    ) -> Result<(), RosterError> {
        self.check_commit(removes, adds)?;
        let mut actual_adds = adds.to_vec();
        let mut declared_a = declared_adds.to_vec();
        actual_adds.sort();
        declared_a.sort();
        if actual_adds != declared_a {
            return Err(RosterError::AddsMismatch {
                declared: declared_a,
                actual: actual_adds,
            });
        }
        let mut actual_removes: Vec<String> = removes
            .iter()
            .filter_map(|&l| self.identity_at(l).map(str::to_owned))
            .collect();
        let mut declared_r = declared_removes.to_vec();
        actual_removes.sort();
        declared_r.sort();
        if actual_removes != declared_r {
            return Err(RosterError::RemovesMismatch {
                declared: declared_r,
                actual: actual_removes,
            });
        }
        Ok(())
    }

    /// Applies a commit (RFC 9420 §12.3): Removes blank their leaves, then each Add takes the
    /// leftmost blank leaf or extends the tree; trailing blank leaves are truncated. Returns
    /// `(identity, leaf)` of each added member. Removes of blank or absent leaves are ignored:
    /// call [`Roster::check_commit`] first.
    pub fn apply_commit(&mut self, removes: &[u32], adds: &[String]) -> Vec<(String, u32)> {
        for &leaf in removes {
            if let Some(slot) = self.leaves.get_mut(leaf as usize) {
                *slot = None;
            }
        }
        let mut added = Vec::with_capacity(adds.len());
        for identity in adds {
            // Leftmost blank leaf, or a new leaf at the right edge.
            let index = self
                .leaves
                .iter()
                .position(Option::is_none)
                .unwrap_or(self.leaves.len());
            match self.leaves.get_mut(index) {
                Some(slot) => *slot = Some(identity.clone()),
                None => self.leaves.push(Some(identity.clone())),
            }
            added.push((identity.clone(), u32::try_from(index).unwrap_or(u32::MAX)));
        }
        self.truncate();
        added
    }

    fn truncate(&mut self) {
        while matches!(self.leaves.last(), Some(None)) {
            self.leaves.pop();
        }
    }
}
