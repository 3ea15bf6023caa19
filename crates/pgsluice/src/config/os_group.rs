//! OS group names, for `unix_socket_group`: the system's group database (as
//! `getgrnam_r`), read when the configuration is checked and when the unix socket
//! is bound.

/// The id of the OS group named `name`; a name made of digits only that no group has
/// is taken as a group id. `None` when no such group exists. May block (NSS): call it
/// at load time or off the async workers.
#[allow(unsafe_code)]
pub fn group_id(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `grp` is plain old data that getgrnam_r fills (zeroed is a valid
        // value for it); every pointer passed is live, writable memory of the stated
        // size, and `c_name` is NUL-terminated. Only `gr_gid` (a plain integer) is read
        // back, and only when `result` is non-null.
        let (rc, gid) = unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let rc = libc::getgrnam_r(
                c_name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            );
            (rc, (!result.is_null()).then_some(grp.gr_gid))
        };
        match (rc, gid) {
            (libc::ERANGE, _) if size < 1 << 20 => size *= 4,
            (0, Some(gid)) => return Some(gid),
            _ => return numeric(name),
        }
    }
}

/// A group id written as digits.
fn numeric(name: &str) -> Option<u32> {
    name.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| name.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_group_and_unknown_names() {
        // Group 0 exists on every Unix system, as "root" (or "wheel" on BSDs).
        assert!(matches!(group_id("root").or(group_id("wheel")), Some(0)));
        assert_eq!(group_id("no-such-group-pgsluice"), None);
        assert_eq!(group_id("bad\0name"), None);
        assert_eq!(group_id("4242"), Some(4242));
        assert_eq!(group_id(""), None);
    }
}
