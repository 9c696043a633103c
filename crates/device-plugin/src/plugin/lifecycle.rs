//! A device plugin's life as states and transitions, without I/O.
//!
//! [`Lifecycle::step`] takes one [`Event`] (something the driver in
//! [`DevicePlugin::run`](super::DevicePlugin::run) saw happen, or the
//! outcome of an [`Action`] it ran) and answers with the actions to run.
//! It touches no socket, file or clock, so every transition is tested as a
//! plain function call, and the driver is left with nothing to decide.
//!
//! Two things sit beside the [`Phase`] rather than in it: whether the
//! directory watch is up (it can fail and be retried in any phase), and
//! the backoff, which only a kubelet that accepts us resets, so a kubelet
//! that keeps refusing is asked less and less often.

use std::time::Duration;

use sriov_api::Backoff;

use super::RegistrationMode;

/// Where the plugin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No socket kubelet could dial, or one the plugin watcher refused:
    /// a fresh one is bound at once or when the retry timer fires.
    Binding,
    /// Listening; a `Register` call on `kubelet.sock` is in flight
    /// (kubelet mode only).
    Registering,
    /// Listening, not registered: the last `Register` failed. It is tried
    /// again when the retry timer fires, or at once if kubelet restarts.
    WaitingForKubelet,
    /// Listening and known to kubelet: `Register` succeeded, or, in
    /// plugin-watcher mode, the socket exists and kubelet finds it itself.
    Serving,
    /// Told to stop; nothing more happens.
    Stopping,
}

/// What the driver saw: I/O it was waiting on, or an action's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// The directory watch is up.
    Watching,
    /// The directory watch could not be set up.
    WatchFailed,
    /// The directory watch ended (directory deleted, inotify failed):
    /// whatever it would have reported since is unknown.
    WatchLost,
    /// The watch dropped events (queue overflow).
    EventsLost,
    /// A fresh socket is bound and served.
    Listening,
    /// Binding the socket failed.
    ListenFailed,
    /// The socket we bound was deleted or replaced.
    SocketLost,
    /// `kubelet.sock` appeared: kubelet (re)started.
    KubeletStarted,
    /// `kubelet.sock` went away: kubelet is down, and whatever it knew of
    /// us goes with it.
    KubeletStopped,
    /// Kubelet's `Register` returned OK.
    Registered,
    /// `Register` failed: kubelet absent, refusing, or too slow.
    RegisterFailed,
    /// Kubelet's plugin watcher reported it registered us.
    WatcherAccepted,
    /// Kubelet's plugin watcher reported it refused us.
    WatcherRefused,
    /// The delay asked for by the last [`Action::RetryIn`] is over.
    RetryDue,
    /// The shutdown future resolved.
    Stop,
}

/// What the driver is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Watch the socket's directory, creating it if need be; answered by
    /// [`Event::Watching`] or [`Event::WatchFailed`].
    Watch,
    /// Replace any server with one on a freshly bound socket; answered by
    /// [`Event::Listening`] or [`Event::ListenFailed`].
    Listen,
    /// Look at the socket file; answered by [`Event::SocketLost`] if it is
    /// not the one we bound.
    CheckSocket,
    /// Call `Register`, abandoning any call in flight; answered, later, by
    /// [`Event::Registered`] or [`Event::RegisterFailed`].
    Register,
    /// Abandon the `Register` call in flight, if any.
    CancelRegister,
    /// Count one registration for [`DevicePlugin::registrations`](super::DevicePlugin::registrations).
    CountRegistration,
    /// Deliver [`Event::RetryDue`] after this delay, instead of any
    /// earlier request.
    RetryIn(Duration),
    /// Stop the server and remove its socket.
    StopServing,
}

/// The state of one plugin's lifecycle.
#[derive(Debug)]
pub(super) struct Lifecycle {
    /// Resolved: never [`RegistrationMode::Auto`].
    mode: RegistrationMode,
    phase: Phase,
    watching: bool,
    backoff: Backoff,
}

impl Lifecycle {
    /// The lifecycle at its start, and the actions that begin it.
    pub(super) fn start(mode: RegistrationMode, backoff: Backoff) -> (Self, Vec<Action>) {
        let life = Self {
            mode,
            phase: Phase::Binding,
            watching: false,
            backoff,
        };
        // The watch first: it creates the directory the socket goes in.
        (life, vec![Action::Watch, Action::Listen])
    }

    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    /// Moves to the next state on `event`; returns what to do, in order.
    pub(super) fn step(&mut self, event: Event) -> Vec<Action> {
        use Action::*;
        use Phase::*;

        let kubelet_mode = self.mode == RegistrationMode::Kubelet;
        match (self.phase, event) {
            (Stopping, _) => vec![],
            (phase, Event::Stop) => {
                self.phase = Stopping;
                let mut actions = Vec::new();
                if phase == Registering {
                    // A kubelet that accepted the connection but never
                    // answers must not hold up shutdown.
                    actions.push(CancelRegister);
                }
                actions.push(StopServing);
                actions
            }

            (_, Event::Watching) => {
                self.watching = true;
                vec![]
            }
            (_, Event::WatchFailed) => {
                self.watching = false;
                vec![self.retry()]
            }
            (_, Event::WatchLost) => {
                self.watching = false;
                let mut actions = vec![Watch];
                actions.extend(self.step(Event::EventsLost));
                actions
            }
            // A socket is about to be bound anyway.
            (Binding, Event::EventsLost) => vec![],
            (_, Event::EventsLost) => {
                // Our socket's removal or kubelet's restart may be among
                // the lost events: look, and register again to be sure
                // (kubelet takes a repeated Register as a refresh).
                let mut actions = vec![CheckSocket];
                if kubelet_mode {
                    self.phase = Registering;
                    actions.push(Register);
                }
                actions
            }

            (Binding, Event::Listening) if kubelet_mode => {
                self.phase = Registering;
                vec![Register]
            }
            (Binding, Event::Listening) => {
                self.phase = Serving;
                vec![]
            }
            (Binding, Event::ListenFailed) => vec![self.retry()],
            (Binding, Event::RetryDue) => {
                let mut actions = self.rewatch();
                actions.push(Listen);
                actions
            }
            // Nothing served any more: stale news.
            (Binding, Event::SocketLost) => vec![],
            (phase, Event::SocketLost) => {
                self.phase = Binding;
                let mut actions = Vec::new();
                if phase == Registering {
                    // Kubelet would dial a socket that no longer exists.
                    actions.push(CancelRegister);
                }
                actions.push(Listen);
                actions
            }

            (Binding, Event::KubeletStarted) if kubelet_mode => {
                self.backoff.reset();
                vec![Listen]
            }
            (_, Event::KubeletStarted) if kubelet_mode => {
                // Whatever the old kubelet knew or was answering is gone
                // with it; a call in flight is abandoned for a new one.
                self.backoff.reset();
                self.phase = Registering;
                vec![Register]
            }

            // Not registered any more; registered again when kubelet comes
            // back (KubeletStarted), or by the retry should its socket's
            // creation be missed.
            (Registering | Serving | WaitingForKubelet, Event::KubeletStopped) if kubelet_mode => {
                let mut actions = Vec::new();
                if self.phase == Registering {
                    actions.push(CancelRegister);
                }
                self.phase = WaitingForKubelet;
                actions.push(self.retry());
                actions
            }

            (Registering, Event::Registered) => {
                self.backoff.reset();
                self.phase = Serving;
                vec![CountRegistration]
            }
            (Registering, Event::RegisterFailed) => {
                self.phase = WaitingForKubelet;
                vec![self.retry()]
            }
            (WaitingForKubelet, Event::RetryDue) => {
                self.phase = Registering;
                let mut actions = self.rewatch();
                actions.push(Register);
                actions
            }
            (Registering | Serving, Event::RetryDue) => self.rewatch(),

            (_, Event::WatcherAccepted) => {
                self.backoff.reset();
                vec![CountRegistration]
            }
            (_, Event::WatcherRefused) => {
                // Not at once: the answer to kubelet's call is still on
                // its way out through the server that would be replaced.
                self.phase = Binding;
                vec![self.retry()]
            }

            // Outcomes of abandoned calls, and kubelet.sock in
            // plugin-watcher mode, where kubelet finds us by itself.
            (
                _,
                Event::Registered
                | Event::RegisterFailed
                | Event::KubeletStarted
                | Event::KubeletStopped,
            ) => vec![],
            // The only action answered by these is Listen, emitted in
            // Binding alone.
            (Registering | WaitingForKubelet | Serving, Event::Listening | Event::ListenFailed) => {
                vec![]
            }
        }
    }

    /// While the directory watch is down, each retry tries it again, and
    /// looks at the socket whose removal the watch would have reported.
    fn rewatch(&self) -> Vec<Action> {
        match (self.watching, self.phase) {
            (true, _) => vec![],
            (false, Phase::Binding) => vec![Action::Watch],
            (false, _) => vec![Action::Watch, Action::CheckSocket],
        }
    }

    fn retry(&mut self) -> Action {
        Action::RetryIn(self.backoff.next_delay())
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::Phase::*;
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A lifecycle in `phase` with the directory watch up and a fresh
    /// backoff of 1, 2, 4, 8, 8… ms.
    fn at(mode: RegistrationMode, phase: Phase) -> Lifecycle {
        Lifecycle {
            mode,
            phase,
            watching: true,
            backoff: Backoff::new(MS, 8 * MS),
        }
    }

    fn kubelet(phase: Phase) -> Lifecycle {
        at(RegistrationMode::Kubelet, phase)
    }

    fn watcher(phase: Phase) -> Lifecycle {
        at(RegistrationMode::PluginWatcher, phase)
    }

    /// Steps once; returns the new phase and the actions.
    fn step(life: &mut Lifecycle, event: Event) -> (Phase, Vec<Action>) {
        let actions = life.step(event);
        (life.phase(), actions)
    }

    /// The delay the next failure would wait.
    fn next_retry(life: &mut Lifecycle) -> Duration {
        life.backoff.next_delay()
    }

    // ------------------------------------------------------------ start

    #[test]
    fn start_watches_the_directory_then_listens() {
        let (life, actions) = Lifecycle::start(RegistrationMode::Kubelet, Backoff::new(MS, 8 * MS));
        assert_eq!(life.phase(), Binding);
        assert!(!life.watching);
        assert_eq!(actions, vec![Watch, Listen]);
    }

    // ---------------------------------------------------------- Binding

    #[test]
    fn binding_then_listening_registers_in_kubelet_mode() {
        assert_eq!(
            step(&mut kubelet(Binding), Event::Listening),
            (Registering, vec![Register])
        );
    }

    #[test]
    fn binding_then_listening_serves_in_plugin_watcher_mode() {
        assert_eq!(
            step(&mut watcher(Binding), Event::Listening),
            (Serving, vec![])
        );
    }

    #[test]
    fn binding_then_listen_failed_retries_with_growing_delays() {
        let mut life = kubelet(Binding);
        assert_eq!(
            step(&mut life, Event::ListenFailed),
            (Binding, vec![RetryIn(MS)])
        );
        assert_eq!(
            step(&mut life, Event::ListenFailed),
            (Binding, vec![RetryIn(2 * MS)])
        );
    }

    #[test]
    fn binding_then_retry_due_listens_again() {
        assert_eq!(
            step(&mut kubelet(Binding), Event::RetryDue),
            (Binding, vec![Listen])
        );
    }

    #[test]
    fn binding_then_retry_due_watches_again_if_the_watch_is_down() {
        let mut life = kubelet(Binding);
        life.watching = false;
        assert_eq!(
            step(&mut life, Event::RetryDue),
            (Binding, vec![Watch, Listen])
        );
    }

    #[test]
    fn binding_then_kubelet_started_listens_at_once_with_a_fresh_backoff() {
        let mut life = kubelet(Binding);
        step(&mut life, Event::ListenFailed);
        assert_eq!(
            step(&mut life, Event::KubeletStarted),
            (Binding, vec![Listen])
        );
        assert_eq!(next_retry(&mut life), MS);
    }

    #[test]
    fn binding_ignores_a_lost_socket_and_lost_events() {
        for event in [Event::SocketLost, Event::EventsLost] {
            assert_eq!(step(&mut kubelet(Binding), event), (Binding, vec![]));
        }
    }

    #[test]
    fn binding_then_stop_stops_serving() {
        assert_eq!(
            step(&mut kubelet(Binding), Event::Stop),
            (Stopping, vec![StopServing])
        );
    }

    // ------------------------------------------------------ Registering

    #[test]
    fn registering_then_registered_serves_counts_and_resets_the_backoff() {
        let mut life = kubelet(Registering);
        next_retry(&mut life);
        assert_eq!(
            step(&mut life, Event::Registered),
            (Serving, vec![CountRegistration])
        );
        assert_eq!(next_retry(&mut life), MS);
    }

    #[test]
    fn registering_then_register_failed_waits_for_kubelet_with_growing_delays() {
        let mut life = kubelet(Registering);
        assert_eq!(
            step(&mut life, Event::RegisterFailed),
            (WaitingForKubelet, vec![RetryIn(MS)])
        );
        step(&mut life, Event::RetryDue);
        // A kubelet that keeps refusing is asked less and less often.
        assert_eq!(
            step(&mut life, Event::RegisterFailed),
            (WaitingForKubelet, vec![RetryIn(2 * MS)])
        );
    }

    #[test]
    fn registering_then_kubelet_started_registers_anew() {
        let mut life = kubelet(Registering);
        next_retry(&mut life);
        assert_eq!(
            step(&mut life, Event::KubeletStarted),
            (Registering, vec![Register])
        );
        assert_eq!(next_retry(&mut life), MS);
    }

    #[test]
    fn registering_then_socket_lost_abandons_the_call_and_listens() {
        assert_eq!(
            step(&mut kubelet(Registering), Event::SocketLost),
            (Binding, vec![CancelRegister, Listen])
        );
    }

    #[test]
    fn registering_then_events_lost_checks_the_socket_and_registers_anew() {
        assert_eq!(
            step(&mut kubelet(Registering), Event::EventsLost),
            (Registering, vec![CheckSocket, Register])
        );
    }

    #[test]
    fn registering_ignores_a_stale_retry() {
        assert_eq!(
            step(&mut kubelet(Registering), Event::RetryDue),
            (Registering, vec![])
        );
    }

    #[test]
    fn registering_then_stop_abandons_the_call_and_stops_serving() {
        assert_eq!(
            step(&mut kubelet(Registering), Event::Stop),
            (Stopping, vec![CancelRegister, StopServing])
        );
    }

    /// Kubelet restarting while our `Register` is in flight: it deletes
    /// our socket, then creates kubelet.sock, in one batch of events.
    #[test]
    fn kubelet_restart_during_registration_ends_registered_on_a_new_socket() {
        let mut life = kubelet(Registering);
        assert_eq!(
            step(&mut life, Event::SocketLost),
            (Binding, vec![CancelRegister, Listen])
        );
        // The driver feeds Listen's outcome before the rest of the batch.
        assert_eq!(
            step(&mut life, Event::Listening),
            (Registering, vec![Register])
        );
        assert_eq!(
            step(&mut life, Event::KubeletStarted),
            (Registering, vec![Register])
        );
        assert_eq!(
            step(&mut life, Event::Registered),
            (Serving, vec![CountRegistration])
        );
    }

    // ------------------------------------------------ WaitingForKubelet

    #[test]
    fn waiting_then_retry_due_registers() {
        assert_eq!(
            step(&mut kubelet(WaitingForKubelet), Event::RetryDue),
            (Registering, vec![Register])
        );
    }

    #[test]
    fn waiting_then_retry_due_also_rewatches_and_checks_the_socket_if_the_watch_is_down() {
        let mut life = kubelet(WaitingForKubelet);
        life.watching = false;
        assert_eq!(
            step(&mut life, Event::RetryDue),
            (Registering, vec![Watch, CheckSocket, Register])
        );
    }

    #[test]
    fn waiting_then_kubelet_started_registers_at_once_with_a_fresh_backoff() {
        let mut life = kubelet(WaitingForKubelet);
        next_retry(&mut life);
        assert_eq!(
            step(&mut life, Event::KubeletStarted),
            (Registering, vec![Register])
        );
        assert_eq!(next_retry(&mut life), MS);
    }

    #[test]
    fn waiting_then_socket_lost_listens() {
        assert_eq!(
            step(&mut kubelet(WaitingForKubelet), Event::SocketLost),
            (Binding, vec![Listen])
        );
    }

    #[test]
    fn waiting_then_stop_stops_serving() {
        assert_eq!(
            step(&mut kubelet(WaitingForKubelet), Event::Stop),
            (Stopping, vec![StopServing])
        );
    }

    // ---------------------------------------------------------- Serving

    #[test]
    fn serving_then_kubelet_started_registers_again() {
        assert_eq!(
            step(&mut kubelet(Serving), Event::KubeletStarted),
            (Registering, vec![Register])
        );
    }

    #[test]
    fn serving_ignores_kubelet_sock_in_plugin_watcher_mode() {
        assert_eq!(
            step(&mut watcher(Serving), Event::KubeletStarted),
            (Serving, vec![])
        );
    }

    #[test]
    fn serving_then_socket_lost_listens() {
        assert_eq!(
            step(&mut kubelet(Serving), Event::SocketLost),
            (Binding, vec![Listen])
        );
        assert_eq!(
            step(&mut watcher(Serving), Event::SocketLost),
            (Binding, vec![Listen])
        );
    }

    #[test]
    fn serving_then_events_lost_checks_the_socket_and_registers_again() {
        assert_eq!(
            step(&mut kubelet(Serving), Event::EventsLost),
            (Registering, vec![CheckSocket, Register])
        );
        assert_eq!(
            step(&mut watcher(Serving), Event::EventsLost),
            (Serving, vec![CheckSocket])
        );
    }

    #[test]
    fn serving_then_watcher_accepted_counts_and_resets_the_backoff() {
        let mut life = watcher(Serving);
        next_retry(&mut life);
        assert_eq!(
            step(&mut life, Event::WatcherAccepted),
            (Serving, vec![CountRegistration])
        );
        assert_eq!(next_retry(&mut life), MS);
    }

    #[test]
    fn serving_then_watcher_refused_binds_again_after_backoff() {
        let mut life = watcher(Serving);
        assert_eq!(
            step(&mut life, Event::WatcherRefused),
            (Binding, vec![RetryIn(MS)])
        );
        assert_eq!(step(&mut life, Event::RetryDue), (Binding, vec![Listen]));
    }

    #[test]
    fn serving_ignores_a_stale_retry_while_watching() {
        assert_eq!(
            step(&mut kubelet(Serving), Event::RetryDue),
            (Serving, vec![])
        );
    }

    #[test]
    fn serving_then_stop_stops_serving() {
        assert_eq!(
            step(&mut kubelet(Serving), Event::Stop),
            (Stopping, vec![StopServing])
        );
    }

    // ---------------------------------------------------- the directory watch

    #[test]
    fn watching_marks_the_watch_up() {
        let mut life = kubelet(Serving);
        life.watching = false;
        assert_eq!(step(&mut life, Event::Watching), (Serving, vec![]));
        assert!(life.watching);
    }

    #[test]
    fn watch_failed_retries_then_rewatches_and_checks_the_socket() {
        let mut life = kubelet(Serving);
        assert_eq!(
            step(&mut life, Event::WatchFailed),
            (Serving, vec![RetryIn(MS)])
        );
        // Without inotify the socket's removal is noticed by looking.
        assert_eq!(
            step(&mut life, Event::RetryDue),
            (Serving, vec![Watch, CheckSocket])
        );
    }

    #[test]
    fn watch_lost_rewatches_checks_the_socket_and_registers_again() {
        let mut life = kubelet(Serving);
        assert_eq!(
            step(&mut life, Event::WatchLost),
            (Registering, vec![Watch, CheckSocket, Register])
        );
        assert!(!life.watching);
    }

    #[test]
    fn watch_lost_while_binding_only_rewatches() {
        assert_eq!(
            step(&mut kubelet(Binding), Event::WatchLost),
            (Binding, vec![Watch])
        );
    }

    // --------------------------------------------------------- Stopping

    #[test]
    fn stopping_ignores_everything() {
        let events = [
            Event::Watching,
            Event::WatchFailed,
            Event::WatchLost,
            Event::EventsLost,
            Event::Listening,
            Event::ListenFailed,
            Event::SocketLost,
            Event::KubeletStarted,
            Event::Registered,
            Event::RegisterFailed,
            Event::WatcherAccepted,
            Event::WatcherRefused,
            Event::RetryDue,
            Event::Stop,
        ];
        for event in events {
            assert_eq!(step(&mut kubelet(Stopping), event), (Stopping, vec![]));
        }
    }

    // ----------------------------------------- outcomes of abandoned calls

    #[test]
    fn register_outcomes_outside_registering_are_ignored() {
        for phase in [Binding, WaitingForKubelet, Serving] {
            for event in [Event::Registered, Event::RegisterFailed] {
                assert_eq!(step(&mut kubelet(phase), event), (phase, vec![]));
            }
        }
    }

    #[test]
    fn kubelet_gone_leaves_serving_and_retries() {
        let mut life = kubelet(Serving);
        assert_eq!(
            step(&mut life, Event::KubeletStopped),
            (WaitingForKubelet, vec![RetryIn(MS)])
        );
        let mut life = kubelet(Registering);
        assert_eq!(
            step(&mut life, Event::KubeletStopped),
            (WaitingForKubelet, vec![CancelRegister, RetryIn(MS)])
        );
        assert_eq!(
            step(&mut kubelet(Binding), Event::KubeletStopped),
            (Binding, vec![])
        );
        assert_eq!(
            step(&mut watcher(Serving), Event::KubeletStopped),
            (Serving, vec![])
        );
    }
}
