//! Every topic name, in one place, under a configurable prefix (docs/ARCHITECTURE.md, "Topics").

/// A topic to create, with its partition count, replication factor and topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub config: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Accepted messages from the collector.
    pub fn raw(&self) -> String {
        self.name("events.raw")
    }
    /// Messages the collector refused (spec violations), with the reason in a header.
    pub fn rejected(&self) -> String {
        self.name("events.rejected")
    }
    /// Messages that passed Protocols.
    pub fn valid(&self) -> String {
        self.name("events.valid")
    }
    /// Messages Protocols blocked, whole, for replay.
    pub fn blocked(&self) -> String {
        self.name("events.blocked")
    }
    /// One record per tracking-plan violation.
    pub fn violations(&self) -> String {
        self.name("violations")
    }
    /// Enriched messages: what every destination reads.
    pub fn enriched(&self) -> String {
        self.name("events.enriched")
    }
    /// Poison messages of a pipeline stage (`validator`, `enricher`).
    pub fn stage_dlq(&self, stage: &str) -> String {
        self.name(&format!("dlq.{stage}"))
    }
    /// A destination instance's retry topic.
    pub fn dest_retry(&self, destination_id: &str) -> String {
        self.name(&format!("dest.{destination_id}.retry"))
    }
    /// A destination instance's dead-letter topic.
    pub fn dest_dlq(&self, destination_id: &str) -> String {
        self.name(&format!("dest.{destination_id}.dlq"))
    }

    /// The pipeline's fixed topics (not per-destination ones).
    pub fn pipeline(&self) -> Vec<String> {
        vec![
            self.raw(),
            self.rejected(),
            self.valid(),
            self.blocked(),
            self.violations(),
            self.enriched(),
            self.stage_dlq("validator"),
            self.stage_dlq("enricher"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design_with_a_prefix() {
        let t = Topics::new("cdp");
        assert_eq!(t.raw(), "cdp.events.raw");
        assert_eq!(t.rejected(), "cdp.events.rejected");
        assert_eq!(t.stage_dlq("validator"), "cdp.dlq.validator");
        assert_eq!(t.dest_retry("hooks"), "cdp.dest.hooks.retry");
        assert_eq!(t.dest_dlq("hooks"), "cdp.dest.hooks.dlq");
        assert_eq!(Topics::new("staging").violations(), "staging.violations");
        assert_eq!(t.pipeline().len(), 8);
    }
}
