//! `leader`: leader/followers (ACE's `ACE_TP_Reactor`, Schmidt et al.,
//! POSA2). N threads (`--workers`) share one event loop; one of them, the
//! leader, waits for readiness while the others, the followers, wait to
//! lead. When the leader gets an event it hands leadership on at once and
//! serves what it got: reads the request, runs the service over it, writes
//! the reply. No queue between threads and no hand-over of a connection:
//! the thread that saw the event does the work, on whichever core it is.
//!
//! The threads share one epoll in `EPOLLONESHOT` mode, so a socket reported
//! to one leader is disarmed until that thread is done with it (two threads
//! never serve one connection), and the loop's state (connections, timers)
//! behind a mutex held only to move bytes and bookkeeping; the service runs
//! outside it ([`Job`](super::event_loop::Job)).

use std::sync::{Arc, Mutex};

use super::epoll::Epoll;
use super::event_loop::{Hooks, Lend, Loop, Poller, Source};
use super::ServerConfig;
use crate::net::{interrupted, Listener};
use crate::service::Service;
use crate::shutdown::Shutdown;

/// One event per wait: the leader takes one, and the next thread leads
/// while it serves that one.
const EVENTS_PER_TURN: usize = 1;

pub fn serve(
    listener: Listener,
    service: Arc<Service>,
    config: &ServerConfig,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let mut epoll = Epoll::new_oneshot(EVENTS_PER_TURN)?;
    let hooks = Hooks {
        lend: Lend::ToCaller,
        ..Hooks::default()
    };
    let mut state = Loop::new(Source::Listener(listener), &service, config, shutdown, hooks)?;
    state.start(&mut epoll)?;
    let state = Mutex::new(state);
    // Whoever holds this waits for readiness: the leader.
    let leadership = Mutex::new(());
    let pollers = (0..config.workers.max(1)).map(|_| epoll.share()).collect();
    shutdown.run_together(
        pollers,
        "a leader thread",
        |i| format!("leader-{i}"),
        |_, poller| take_turns(poller, &state, &leadership),
    )
}

/// One thread's life: wait to lead, lead (wait for one event), hand on,
/// serve the event; until the loop winds down.
fn take_turns(mut poller: Epoll, state: &Mutex<Loop<'_>>, leadership: &Mutex<()>) -> anyhow::Result<()> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let mut events = Vec::with_capacity(EVENTS_PER_TURN);
    loop {
        let leading = leadership.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = {
            let mut state = lock();
            if state.is_done() {
                return Ok(());
            }
            state.wait_for_waiter()
        };
        events.clear();
        match poller.wait(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        // Promote a follower, then serve what we got.
        drop(leading);
        let jobs = {
            let mut state = lock();
            state.turn(&mut poller, &events)?;
            state.take_lent()
        };
        for job in jobs {
            let finished = job.run();
            lock().give_back(finished, &mut poller);
        }
    }
}
