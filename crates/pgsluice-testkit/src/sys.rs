//! The few OS calls the testkit needs that std does not offer, each in one
//! small, documented `unsafe` block, plus `/proc` helpers.

use std::ffi::CString;
use std::io;

/// Sends `sig` to the single process `pid` (never a process group).
pub(crate) fn kill(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    #[allow(unsafe_code)]
    // SAFETY: kill(2) takes two integers and touches no memory of ours; `pid` is
    // strictly positive, so it addresses exactly one process, never a group.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective uid of this process.
#[allow(unsafe_code)]
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Looks `name` up in the user database (/etc/passwd); returns (uid, gid).
pub(crate) fn lookup_user(name: &str) -> io::Result<(u32, u32)> {
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 16 * 1024];
    loop {
        let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        #[allow(unsafe_code)]
        // getpwnam_r is the reentrant variant, so no static buffer is shared; `cname`
        // is NUL-terminated, `pwd` is storage for one `passwd`, `buf` is writable for
        // `buf.len()` bytes and `result` is a writable pointer slot.
        // SAFETY: every pointer handed to getpwnam_r(3) is valid for the call.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                pwd.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1024 * 1024 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("OS user {name:?} not found in the user database"),
            ));
        }
        #[allow(unsafe_code)]
        // SAFETY: rc == 0 and `result` is non-null, so getpwnam_r initialised `pwd`
        // (result points at it). We only copy out two integer fields.
        let (uid, gid) = unsafe {
            let pwd = pwd.assume_init_ref();
            (pwd.pw_uid, pwd.pw_gid)
        };
        return Ok((uid, gid));
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub(crate) fn process_alive(pid: u32) -> bool {
    pid > 0 && matches!(proc_stat(pid), Some((state, _)) if !matches!(state, 'Z' | 'X' | 'x'))
}

/// (state, ppid) of a process from /proc/PID/stat.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Pids of the direct children of `parent`.
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(proc_stat(*pid), Some((_, ppid)) if ppid == parent))
        .collect()
}

/// The command line of a process, arguments joined by spaces.
pub(crate) fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Number of open file descriptors of a process (entries of /proc/PID/fd).
pub(crate) fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Resident set size of a process in bytes (`VmRSS` of /proc/PID/status).
pub(crate) fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

/// Raises this process's soft RLIMIT_NOFILE to `wanted` (capped at the hard
/// limit; never lowered); returns the soft limit in force afterwards. Child
/// processes started later inherit it.
pub(crate) fn raise_nofile_limit(wanted: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit(2) writes one `rlimit` into `lim`, a valid, exclusively
    // borrowed local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let target = wanted.min(lim.rlim_max);
    if target <= lim.rlim_cur {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = target;
    #[allow(unsafe_code)]
    // SAFETY: setrlimit(2) only reads the `rlimit` behind the pointer, a valid local.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(target)
}
