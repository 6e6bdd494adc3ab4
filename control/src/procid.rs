//! Which process a pid names: its start time and its network namespace. A pid is reused
//! once its process is gone, so an `attach --pid` container is restored only when both
//! still match what was saved with it.

use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

/// What identifies a process beyond its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcIdentity {
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot when the process started.
    pub start_time: u64,
    /// The inode of `/proc/PID/ns/net`.
    pub netns_inode: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcIdError {
    #[error("no process with pid {0}")]
    Gone(u32),
    #[error("/proc/{0}/stat is not in the expected format")]
    BadStat(u32),
}

/// The start time from the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After the name come field 3 (state) onwards; field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Reads the identity of the process `pid` now.
pub fn identity(pid: u32) -> Result<ProcIdentity, ProcIdError> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| ProcIdError::Gone(pid))?;
    let start_time = parse_start_time(&stat).ok_or(ProcIdError::BadStat(pid))?;
    let netns_inode = std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .map_err(|_| ProcIdError::Gone(pid))?
        .ino();
    Ok(ProcIdentity {
        start_time,
        netns_inode,
    })
}

/// Why process `pid` is not the one saved as `saved`, or None when it is.
pub fn mismatch(pid: u32, saved: Option<ProcIdentity>) -> Option<String> {
    let Some(saved) = saved else {
        return Some(format!(
            "pid {pid} was saved without its start time and namespace, so it cannot be told from another process"
        ));
    };
    match identity(pid) {
        Err(e) => Some(e.to_string()),
        Ok(now) if now.start_time != saved.start_time => Some(format!(
            "pid {pid} is now another process (started at tick {}, the attached one at {})",
            now.start_time, saved.start_time
        )),
        Ok(now) if now.netns_inode != saved.netns_inode => Some(format!(
            "process {pid} is in another network namespace (inode {}, attached in {})",
            now.netns_inode, saved.netns_inode
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_after_a_name_with_spaces_and_parentheses() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
        assert_eq!(parse_start_time(&format!("7 (sleep) {tail}")), Some(424242));
        assert_eq!(
            parse_start_time(&format!("7 (a) (b) c)) {tail}")),
            Some(424242)
        );
        assert_eq!(parse_start_time("7 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
        assert_eq!(parse_start_time(""), None);
    }

    #[test]
    fn this_process_is_itself() {
        let me = std::process::id();
        let id = identity(me).expect("own identity");
        assert!(id.start_time > 0);
        assert_eq!(mismatch(me, Some(id)), None);
        let older = ProcIdentity {
            start_time: id.start_time.wrapping_add(1),
            ..id
        };
        assert!(mismatch(me, Some(older)).is_some_and(|m| m.contains("another process")));
        assert!(mismatch(me, None).is_some());
    }
}
