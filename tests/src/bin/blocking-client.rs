//! A client whose reads wait in the kernel, as a non-Go program's do (Python's, a C client's):
//! one HTTP/1.1 GET, then blocking reads to the end of the response. Not Go on purpose: the
//! tracer counts the reads in progress of a target that is not a Go program from its start, so
//! a reader waiting through a long silence is not taken for one that gave up.
//!
//! `blocking-client ADDR PATH [--late]`: with `--late` the socket is non-blocking through
//! connect, as Go's are, and blocking from its first read (the tracer learns that at that
//! read). Prints WAITING, connects at a line on stdin, prints the bytes read, then DONE.

use std::{
    io::{self, BufRead, Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    os::fd::FromRawFd,
    time::{Duration, Instant},
};

fn main() {
    if let Err(e) = run() {
        eprintln!("blocking-client: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(path)) = (args.get(1), args.get(2)) else {
        return Err(io::Error::other(
            "usage: blocking-client ADDR PATH [--late]",
        ));
    };
    let addr: SocketAddrV4 = addr
        .parse()
        .map_err(|e| io::Error::other(format!("{addr}: {e}")))?;
    let late = args.get(3).is_some_and(|a| a == "--late");
    println!("WAITING");
    io::stdout().flush()?;
    io::stdin().lock().read_line(&mut String::new())?;
    let mut stream = if late {
        connect_late(addr)?
    } else {
        TcpStream::connect(SocketAddr::V4(addr))?
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    println!("READ {total} bytes\nDONE");
    Ok(())
}

/// Connects with the socket non-blocking (O_NONBLOCK before connect, as Go does), waits for the
/// connection, then makes it blocking.
fn connect_late(addr: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: plain syscalls on an fd this function owns; the TcpStream takes it over.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let ret = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let err = io::Error::last_os_error();
        if ret != 0 && err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
        // Bounded: a loopback connect completes at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        while stream.peer_addr().is_err() {
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("not connected after 5 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}
