//! Fencing (issue 15 §2): every message of a controller that elects a leader carries the
//! leader's generation (`ControllerMessage.leader_generation`, higher is newer). The agent
//! remembers the newest it has obeyed and refuses anything older: a deposed leader that has not
//! noticed yet cannot start or stop runners behind its successor's back. Generation 0 is a
//! controller without election (one replica, or older than protocol 1.3): never refused.
//! Pure, so the rules are table-tested; the worker reports refusals (`CommandRefused`).

/// The newest leader generation this agent has seen (for the life of the process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence {
    newest: u64,
}

/// A message from a leader older than one already obeyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused: sent by leader generation {generation}, older than generation {newest} this agent \
     already follows (a deposed controller replica)"
)]
pub struct Stale {
    pub generation: u64,
    pub newest: u64,
}

impl Fence {
    /// Admits a message of `generation`, remembering it when it is the newest.
    pub fn admit(&mut self, generation: u64) -> Result<(), Stale> {
        if generation == 0 {
            return Ok(());
        }
        if generation < self.newest {
            return Err(Stale {
                generation,
                newest: self.newest,
            });
        }
        self.newest = generation;
        Ok(())
    }

    pub fn newest(&self) -> u64 {
        self.newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_generations_are_refused_newer_and_unfenced_ones_admitted() {
        // (the generations seen before, the one offered, admitted?)
        let cases: &[(&[u64], u64, bool)] = &[
            (&[], 0, true),
            (&[], 1, true),
            (&[3], 3, true),
            (&[3], 4, true),
            (&[3], 2, false),
            (&[3, 5], 4, false),
            (&[5], 0, true),
            (&[0, 0], 1, true),
        ];
        for (seen, offered, admitted) in cases {
            let mut fence = Fence::default();
            for g in *seen {
                fence.admit(*g).unwrap();
            }
            let before = fence.newest();
            let result = fence.admit(*offered);
            assert_eq!(result.is_ok(), *admitted, "{seen:?} then {offered}");
            if let Err(stale) = result {
                assert_eq!(
                    stale,
                    Stale {
                        generation: *offered,
                        newest: before
                    }
                );
                assert_eq!(fence.newest(), before, "a refusal changes nothing");
            }
        }
    }
}
