//! The group coordinator's way into the metadata: claiming the groups when
//! this node starts coordinating, and storing a group's membership. One
//! attempt each: the coordinator decides what a failure means (retry the
//! claim while it still leads; a failed store sends the group's members back
//! to JoinGroup).

use crate::driver::{MetaHandle, ProposalError};
use crate::proto::{ClaimGroupCoordinator, Command, GroupRecord, MetadataBatch};

impl MetaHandle {
    /// Makes the coordinator of `coordinator_term` the only one whose group
    /// stores apply. Returns the metadata version it applied at: the groups
    /// in any state at or after it are the ones to load.
    pub async fn claim_group_coordinator(&self, coordinator_term: u64) -> Result<u64, ProposalError> {
        let claim = ClaimGroupCoordinator { coordinator_term };
        self.propose(MetadataBatch { commands: vec![Command::ClaimGroupCoordinator(claim).into()] }).await
    }

    /// Stores a group's membership (stamped with the coordinator's term and
    /// store count).
    pub async fn store_group(&self, record: GroupRecord) -> Result<u64, ProposalError> {
        self.propose(MetadataBatch { commands: vec![Command::StoreGroup(record).into()] }).await
    }
}
