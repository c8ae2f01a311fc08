//! Thin wrappers over positional file I/O: the seam where all storage syscalls go through.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// Writes every buffer at `pos`, in order, with as few pwritev(2) calls as the kernel allows.
pub fn pwritev_all(file: &File, mut pos: u64, bufs: &[&[u8]]) -> io::Result<()> {
    let mut idx = 0;
    let mut skip = 0usize; // bytes of bufs[idx] already written
    const IOV_MAX: usize = 1024;
    loop {
        while idx < bufs.len() && bufs[idx].len() == skip {
            idx += 1;
            skip = 0;
        }
        if idx == bufs.len() {
            return Ok(());
        }
        let iovecs: Vec<libc::iovec> = bufs[idx..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, b)| {
                let b = if i == 0 { &b[skip..] } else { b };
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            })
            .collect();
        // SAFETY: every iovec points into a live slice borrowed for the duration of the call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iovecs.as_ptr(),
                iovecs.len() as libc::c_int,
                pos as libc::off_t,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut n = n as usize;
        pos += n as u64;
        while n > 0 && idx < bufs.len() {
            let left = bufs[idx].len() - skip;
            if n >= left {
                n -= left;
                idx += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
}

/// Reads up to `len` bytes at `pos`; fewer only at end of file.
pub fn read_at_most(file: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pwritev_writes_all_buffers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let big = vec![7u8; 100_000];
        pwritev_all(&f, 3, &[b"ab", b"", &big, b"c"]).unwrap();
        pwritev_all(&f, 0, &[]).unwrap();
        pwritev_all(&f, 0, &[b"", b""]).unwrap();
        let back = read_at_most(&f, 3, 200_000).unwrap();
        assert_eq!(back.len(), 100_003);
        assert_eq!(&back[..2], b"ab");
        assert_eq!(back[100_002], b'c');
    }
}
