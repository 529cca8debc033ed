//! The relay worker against an office's real SMTP server (aiosmtpd): refusals, deferrals,
//! expiry, each with its evidence; and the operator's queue commands.

use std::sync::Arc;

use bote::evidence::{Event, ReasonCode};
use bote::store::Backend;

use crate::api::{Cast, cast};
use crate::interop::{Sink, add_kreis, queue_relay, relay_to};
use crate::support::{Gateway, run, stdout};

/// The chain of the external recipient, once its last event is `event` (waits up to 30 s).
async fn wait_for(c: &Cast, gateway_id: &str, event: Event) -> Vec<bote::evidence::StoredEvidence> {
    let recipient = bote::address::EmailAddress::parse("amt@kreis.example").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        let chain = bote::evidence::query::chain(&mut conn, gateway_id, Some(&recipient))
            .await
            .unwrap();
        if chain.last().is_some_and(|e| e.record.event == event) {
            return chain;
        }
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {event} for {gateway_id}");
}

/// Whether `file` appears within 20 s (what the office's server writes as mail arrives).
async fn appears(file: &std::path::Path) -> bool {
    for _ in 0..400 {
        if file.exists() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    file.exists()
}

/// Stops a relay worker and waits (up to 20 s) until its attempts in flight are done.
async fn stop_worker(
    stop: &tokio_util::sync::CancellationToken,
    worker: tokio::task::JoinHandle<()>,
) {
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(20), worker)
        .await
        .expect("the worker stopped")
        .unwrap();
}

fn office_cert() -> Vec<u8> {
    let home = tempfile::tempdir().unwrap();
    crate::interop::gpg_office_key(home.path(), "Kreisverwaltung <amt@kreis.example>")
}

/// The cast, its core configured with `edit` (queue timings).
async fn cast_with(edit: impl Fn(&mut bote::config::Config)) -> Cast {
    cast_again(cast(Gateway::new(Backend::Sqlite).await).await, edit)
}

/// Shutdown waits for a relay attempt in flight: the office's 250, which comes while the
/// gateway is stopping, is recorded before the worker returns (else the job would be sent
/// again after the restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_relay_attempt_in_flight() {
    let c = cast_with(|_| {}).await;
    let sink = Sink::start("slow");
    let id = queue_relay(&c, sink.port, office_cert()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    assert!(
        appears(&sink.dir.path().join("mail/data-started")).await,
        "the office's server never got the message"
    );
    stop_worker(&stop, worker).await;
    let recipient = bote::address::EmailAddress::parse("amt@kreis.example").unwrap();
    let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
    let chain = bote::evidence::query::chain(&mut conn, &id, Some(&recipient))
        .await
        .unwrap();
    let last = &chain.last().unwrap().record;
    assert_eq!(last.event, Event::RelayToNonERDS);
    assert!(
        last.details.reply.as_deref().unwrap().contains("KREIS1"),
        "{:?}",
        last.details.reply
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_evidence_with_the_servers_reply_and_reaches_the_sender() {
    let c = cast_with(|_| {}).await;
    let sink = Sink::start("reject");
    let (id, stop) = relay_to(&c, sink.port, office_cert()).await;
    let chain = wait_for(&c, &id, Event::RelayToNonERDSFailure).await;
    let failure = &chain.last().unwrap().record;
    assert_eq!(failure.reason, ReasonCode::RefusedByRecipientSystem);
    let reply = failure.details.reply.clone().unwrap();
    assert!(
        reply.contains("550") && reply.contains("Annahme verweigert"),
        "{reply}"
    );
    stop.cancel();
    // The sender sees it among the receipts of the message.
    // A second high login in the same TOTP window would be a replay: normal suffices.
    let anna = c.api.login("anna@lemgo.example").await;
    let receipts = c
        .api
        .get(&format!("/api/v1/messages/{id}/receipts"), &anna)
        .await
        .json();
    assert!(
        receipts
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["headers"]["REM-EventIdentifier"] == "RelayToNonERDSFailure"),
        "{receipts}"
    );
    // The operator's queue shows the failed job, with the reason.
    let list = stdout(&run(c.api.gw.setup.cmd(&["queue", "list"])));
    assert!(
        list.contains("failed") && list.contains("amt@kreis.example"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_is_retried_and_then_delivered() {
    let c = cast_with(|config| config.queue.retry_base_ms = 100).await;
    let sink = Sink::start("defer-once");
    let (id, stop) = relay_to(&c, sink.port, office_cert()).await;
    let chain = wait_for(&c, &id, Event::RelayToNonERDS).await;
    assert_eq!(chain.len(), 2, "no evidence for the deferral itself");
    let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
    let jobs = bote::store::messages::jobs_of(&mut conn, &id)
        .await
        .unwrap();
    assert_eq!((jobs[0].state.as_str(), jobs[0].attempts), ("done", 2));
    stop.cancel();
    let (_, envelope) = sink.first().await;
    assert!(envelope.contains("amt@kreis.example"));
}

/// The relay worker holds the message it sends within the memory budget that the intake
/// uses: while other messages in flight fill the budget, the claimed job waits unsent;
/// once they are committed (their room given back) it goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_waits_for_room_in_the_memory_budget() {
    const BUDGET: u64 = 1024 * 1024;
    let c = cast_with(|config| config.limits.memory_budget = BUDGET).await;
    let sink = Sink::start("accept");
    let id = queue_relay(&c, sink.port, office_cert()).await;
    let in_flight = c.api.core.reserve_memory(BUDGET).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    let state = || async {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        let jobs = bote::store::messages::jobs_of(&mut conn, &id)
            .await
            .unwrap();
        jobs[0].state.clone()
    };
    for _ in 0..200 {
        if state().await == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(state().await, "running", "the job was not claimed");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        !sink.dir.path().join("mail/1.eml").exists(),
        "relayed while the memory budget was full"
    );
    assert_eq!(state().await, "running");
    drop(in_flight);
    let (wire, _) = sink.first().await;
    assert!(wire.contains("multipart/encrypted"), "{wire}");
    wait_for(&c, &id, Event::RelayToNonERDS).await;
    assert_eq!(c.api.core.memory_in_use(), 0, "the relay kept its room");
    stop_worker(&stop, worker).await;
}

crate::on_both_backends!(
    jobs_waiting_for_a_session_go_back_to_the_queue_at_shutdown,
    super::unsent_go_back
);

/// A worker with one SMTP session (`queue.relay_sessions = 1`) and a slow office server:
/// one job talks while the others wait for the session, claimed. Stopping lets the one in
/// its session finish and gives the waiting ones back to the queue unsent (due as before,
/// no lease, no attempt counted), so the next start sends them at once instead of after
/// their lease as jobs of a dead worker.
async fn unsent_go_back(gw: Gateway) {
    let c = cast_again(cast(gw).await, |config| config.queue.relay_sessions = 1);
    let sink = Sink::start("hold");
    queue_relay(&c, sink.port, office_cert()).await;
    let anna = c.api.login("anna@lemgo.example").await;
    for n in 0..2 {
        let body = crate::api::letter("amt@kreis.example", &format!("Nachtrag {n}"), "Anlage");
        let r = c.api.post("/api/v1/messages", &anna, body).await;
        assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
    }
    let jobs = |state: &'static str| {
        let pool = c.api.gw.store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM outbound_jobs WHERE state = $1 \
                 AND (lease_owner IS NULL) = ($1 <> 'running')",
            )
            .bind(state)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // What a give-back must leave as it was.
    let as_queued = || {
        let pool = c.api.gw.store.pool().clone();
        async move {
            sqlx::query_as::<_, (i64, String, i64, i64, Option<String>)>(
                "SELECT id, state, attempts, due_at, last_error FROM outbound_jobs ORDER BY id",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let before = as_queued().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    let started = sink.dir.path().join("mail/data-started");
    for _ in 0..1000 {
        if started.exists() && jobs("running").await == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(started.exists(), "the office's server never got a message");
    assert_eq!(
        jobs("running").await,
        3,
        "all three claimed, one in its session"
    );
    // The office holds its 250 until the worker is told to stop: the job in the session
    // then finishes, and the ones waiting must not take the session it frees.
    stop.cancel();
    std::fs::write(sink.dir.path().join("mail/release"), b"").unwrap();
    stop_worker(&stop, worker).await;
    assert!(sink.dir.path().join("mail/1.eml").exists());
    assert!(
        !sink.dir.path().join("mail/2.eml").exists(),
        "a job waiting for the session was sent during the shutdown"
    );
    assert_eq!(jobs("done").await, 1);
    assert_eq!(
        jobs("queued").await,
        2,
        "the waiting jobs are due again, unleased"
    );
    let unsent = |rows: Vec<(i64, String, i64, i64, Option<String>)>, ids: &[i64]| {
        rows.into_iter()
            .filter(|r| ids.contains(&r.0))
            .map(|(id, _, attempts, due, error)| (id, attempts, due, error))
            .collect::<Vec<_>>()
    };
    let after = as_queued().await;
    let given_back: Vec<i64> = after
        .iter()
        .filter(|r| r.1 == "queued")
        .map(|r| r.0)
        .collect();
    assert_eq!(given_back.len(), 2);
    assert_eq!(
        unsent(after, &given_back),
        unsent(before, &given_back),
        "a give-back counts no attempt, moves no due time, records no error"
    );

    // The next start sends them without waiting for a lease to run out.
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    let third = appears(&sink.dir.path().join("mail/3.eml")).await;
    stop.cancel();
    assert!(third, "the jobs given back were not sent after the restart");
}

/// A relay attempt that outlasts the claim's lease (`queue.lease_secs = 3`; an office server
/// that takes 8 s to answer the final dot) keeps its job: the worker must not claim it again
/// as an orphan and send it a second time while the first attempt is still waiting for the
/// 250. (A lease of a few seconds, not one: the renewals, a third of a lease apart, must
/// not miss it on a loaded machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_outlasting_its_lease_is_not_sent_twice() {
    let c = cast_with(|config| config.queue.lease_secs = 3).await;
    let sink = Sink::start("slow:8");
    let (id, stop) = relay_to(&c, sink.port, office_cert()).await;
    wait_for(&c, &id, Event::RelayToNonERDS).await;
    stop.cancel();
    // A second claim would have come once the lease ran out, 3 s into the 8 s attempt,
    // and its message would have reached the server by now.
    let started = std::fs::read_to_string(sink.dir.path().join("mail/data-started")).unwrap();
    assert_eq!(
        started.trim(),
        "1",
        "the office got the message twice: the lease expired during the attempt"
    );
    assert!(sink.dir.path().join("mail/1.eml").exists());
}

/// A lease that lapses during the worker's own attempt (its renewals failing, as when the
/// database is away for a while: simulated by expiring the lease every 50 ms) comes back
/// to the same worker as an orphan; the worker must not start a second attempt beside its
/// first, which would send the message twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lapsing_during_the_workers_own_attempt_starts_no_second_one() {
    let c = cast_with(|config| config.queue.lease_secs = 3).await;
    let sink = Sink::start("slow:6");
    let (id, stop) = relay_to(&c, sink.port, office_cert()).await;
    let started = sink.dir.path().join("mail/data-started");
    assert!(appears(&started).await, "the attempt began");
    let expiring = tokio_util::sync::CancellationToken::new();
    let expire = {
        let (store, expiring, id) = (c.api.gw.store.clone(), expiring.clone(), id.clone());
        tokio::spawn(async move {
            while !expiring.is_cancelled() {
                sqlx::query("UPDATE outbound_jobs SET lease_expires_at = 1 WHERE gateway_id = $1 AND state = 'running'")
                    .bind(&id)
                    .execute(store.pool())
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    };
    wait_for(&c, &id, Event::RelayToNonERDS).await;
    expiring.cancel();
    expire.await.unwrap();
    stop.cancel();
    assert_eq!(
        std::fs::read_to_string(&started).unwrap().trim(),
        "1",
        "the office got the message twice"
    );
}

/// The office answers 250, and the commit of that outcome fails (a trigger refuses it for
/// two seconds, as a database that is briefly away would): the worker tries the commit
/// again, keeping its lease (2 s) alive meanwhile, instead of leaving the job to be claimed
/// and sent once more. The retries succeed at their last try, 3 s after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_outcome_commit_is_tried_again_not_sent_again() {
    let c = cast_with(|config| config.queue.lease_secs = 2).await;
    {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        for sql in [
            "CREATE TABLE refuse_outcomes (x INTEGER)",
            "INSERT INTO refuse_outcomes VALUES (1)",
            "CREATE TRIGGER refuse_outcome BEFORE UPDATE ON outbound_jobs \
             WHEN NEW.state = 'done' AND EXISTS (SELECT 1 FROM refuse_outcomes) \
             BEGIN SELECT RAISE(ABORT, 'outcome refused by the test'); END",
        ] {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
    }
    let sink = Sink::start("accept");
    let (id, stop) = relay_to(&c, sink.port, office_cert()).await;
    assert!(
        appears(&sink.dir.path().join("mail/1.eml")).await,
        "the office's server never got the message"
    );
    // Refused past the first lease: without renewals during the retries the job would be
    // claimed again as an orphan.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        sqlx::query("DELETE FROM refuse_outcomes")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let chain = wait_for(&c, &id, Event::RelayToNonERDS).await;
    assert_eq!(chain.len(), 2, "one relay record");
    // A second copy would come after the 2 s lease.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop.cancel();
    assert!(
        !sink.dir.path().join("mail/2.eml").exists(),
        "the office got the message twice: the failed commit left the job to be sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_relays_to_one_server_reuse_its_connection() {
    let c = cast_with(|_| {}).await;
    let sink = Sink::start("accept");
    let (first, stop) = relay_to(&c, sink.port, office_cert()).await;
    wait_for(&c, &first, Event::RelayToNonERDS).await;
    let anna = c.api.login("anna@lemgo.example").await;
    for n in 0..4 {
        let body = crate::api::letter("amt@kreis.example", &format!("Nachtrag {n}"), "Anlage");
        let r = c.api.post("/api/v1/messages", &anna, body).await;
        assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
        let id = r.json()["gateway_id"].as_str().unwrap().to_owned();
        wait_for(&c, &id, Event::RelayToNonERDS).await;
    }
    stop.cancel();
    let sessions = std::fs::read_to_string(sink.dir.path().join("mail/sessions")).unwrap();
    assert_eq!(sessions.trim(), "1", "five relays, one SMTP session");
    assert!(sink.dir.path().join("mail/5.eml").exists());
}

/// Relay payloads the database holds (queued and failed jobs keep theirs).
async fn stored_payloads(c: &Cast) -> i64 {
    let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM outbound_payloads")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_expires_with_evidence_and_the_operator_can_retry() {
    let c = cast_with(|config| config.queue.relay_expiry_secs = 0).await;
    let port = crate::support::free_port();
    let (id, stop) = relay_to(&c, port, office_cert()).await;
    let chain = wait_for(&c, &id, Event::RelayToNonERDSFailure).await;
    assert_eq!(chain.last().unwrap().record.reason, ReasonCode::Expired);
    stop.cancel();

    // The office's server is back; the operator sends the job again.
    let list = stdout(&run(c.api.gw.setup.cmd(&["queue", "list"])));
    let job = list
        .lines()
        .next()
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        stored_payloads(&c).await,
        1,
        "a failed job keeps its payload"
    );
    let sink = Sink::start_on(port, "accept");
    let out = run(c.api.gw.setup.cmd(&["queue", "retry", &job]));
    assert_eq!(
        stdout(&out),
        format!("queued: {job}\n"),
        "{}",
        crate::support::stderr(&out)
    );
    let c = cast_again(c, |config| config.queue.relay_expiry_secs = 3600);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    wait_for(&c, &id, Event::RelayToNonERDS).await;
    let (_, envelope) = sink.first().await;
    assert!(envelope.contains("amt@kreis.example"));
    stop.cancel();
    assert_eq!(
        stored_payloads(&c).await,
        0,
        "delivered: the payload is gone"
    );

    // Unknown jobs, and deleting a finished one.
    crate::support::assert_one_line_error(
        &run(c.api.gw.setup.cmd(&["queue", "retry", "99999"])),
        &["no queued or failed job 99999"],
    );
    let out = run(c.api.gw.setup.cmd(&["queue", "delete", &job]));
    assert_eq!(stdout(&out), format!("deleted: {job}\n"));
    assert!(stdout(&run(c.api.gw.setup.cmd(&["queue", "list"]))).is_empty());
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'queue.%' ORDER BY id")
            .fetch_all(c.api.gw.store.pool())
            .await
            .unwrap();
    assert_eq!(actions, ["queue.retry", "queue.delete"]);
}

/// The first job's id in `bote queue list`.
fn first_job(c: &Cast) -> String {
    let list = stdout(&run(c.api.gw.setup.cmd(&["queue", "list"])));
    let line = list
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no job: {list}"));
    line.split('\t').next().unwrap().to_owned()
}

/// Sets job `job`'s state in the database (what a worker's claim would do).
async fn set_state(c: &Cast, job: &str, state: &str) {
    let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
    sqlx::query("UPDATE outbound_jobs SET state = $1 WHERE id = $2")
        .bind(state)
        .bind(job.parse::<i64>().unwrap())
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// The chain of the external recipient now.
async fn kreis_chain(c: &Cast, id: &str) -> Vec<bote::evidence::StoredEvidence> {
    let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
    let to = bote::address::EmailAddress::parse("amt@kreis.example").unwrap();
    bote::evidence::query::chain(&mut conn, id, Some(&to))
        .await
        .unwrap()
}

crate::on_both_backends!(
    deleting_a_queued_job_records_its_cancellation,
    super::cancellation
);

/// `bote queue delete` of a job not yet sent ends it with evidence the sender sees (the
/// message must not stay "being relayed" with no record of why it never went), in the
/// transaction that removes it; a job being sent is refused and keeps everything.
async fn cancellation(gw: Gateway) {
    let c = cast(gw).await;
    // No worker runs: the job waits in the queue.
    let id = queue_relay(&c, crate::support::free_port(), office_cert()).await;
    let job = first_job(&c);

    set_state(&c, &job, "running").await;
    crate::support::assert_one_line_error(
        &run(c.api.gw.setup.cmd(&["queue", "delete", &job])),
        &[&format!("no job {job} that could be deleted"), "being sent"],
    );
    assert_eq!(kreis_chain(&c, &id).await.len(), 1, "nothing recorded");
    assert_eq!(stored_payloads(&c).await, 1);

    set_state(&c, &job, "queued").await;
    let out = run(c.api.gw.setup.cmd(&["queue", "delete", &job]));
    assert_eq!(
        stdout(&out),
        format!("deleted: {job} (not sent; cancellation recorded as evidence)\n"),
        "{}",
        crate::support::stderr(&out)
    );
    let chain = kreis_chain(&c, &id).await;
    let last = &chain.last().unwrap().record;
    assert_eq!(chain.len(), 2);
    assert_eq!(last.event, Event::RelayToNonERDSFailure);
    assert_eq!(last.reason, ReasonCode::Policy);
    let note = last.details.note.clone().unwrap_or_default();
    assert!(note.contains("cancelled by the operator"), "{note}");
    assert!(stdout(&run(c.api.gw.setup.cmd(&["queue", "list", "--all"]))).is_empty());
    assert_eq!(stored_payloads(&c).await, 0, "its payload went with it");
    // The operator's command is in the audit trail, the refused attempt is not.
    let audited: Vec<(String, String, String)> =
        sqlx::query_as("SELECT action, target, details FROM audit_log WHERE action LIKE 'queue.%'")
            .fetch_all(c.api.gw.store.pool())
            .await
            .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].0, "queue.delete");
    assert_eq!(audited[0].1, format!("job {job}"));
    assert!(audited[0].2.contains("\"cancelled\":true"), "{audited:?}");

    // The sender sees it among the receipts; the log written by two processes verifies.
    let anna = c.api.login("anna@lemgo.example").await;
    let receipts = c
        .api
        .get(&format!("/api/v1/messages/{id}/receipts"), &anna)
        .await
        .json();
    assert!(
        receipts
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["headers"]["REM-EventIdentifier"] == "RelayToNonERDSFailure"),
        "{receipts}"
    );
    let out = run(c.api.gw.setup.cmd(&["log", "verify"]));
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
}

/// A job whose stored message no longer reads cannot be mended by trying again: it fails
/// at once with evidence (RA02) and is not sent, instead of being held until its lease
/// ran out and taken over as an orphan, lease after lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_be_sent_fails_with_evidence_instead_of_cycling() {
    // The stored format's mark, then parts whose lengths do not add up.
    let broken = b"\0bote-p1\xff\xff\xff\xff".to_vec();
    unsendable(
        sqlx::query("UPDATE outbound_payloads SET payload = $1").bind(broken),
        "not sent: the stored message",
    )
    .await;
    unsendable(
        sqlx::query("DELETE FROM outbound_payloads"),
        "not sent: the stored message is missing",
    )
    .await;
}

/// A job whose payload `damage` made unsendable fails with RA02 and `why`.
async fn unsendable(
    damage: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>,
    why: &str,
) {
    let c = cast_with(|_| {}).await;
    let sink = Sink::start("accept");
    let id = queue_relay(&c, sink.port, office_cert()).await;
    {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        damage.execute(&mut *conn).await.unwrap();
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    let chain = wait_for(&c, &id, Event::RelayToNonERDSFailure).await;
    let failure = &chain.last().unwrap().record;
    assert_eq!(failure.reason, ReasonCode::InvalidFormat);
    let reply = failure.details.reply.clone().unwrap_or_default();
    assert!(reply.contains(why), "{reply}");
    stop_worker(&stop, worker).await;
    let list = stdout(&run(c.api.gw.setup.cmd(&["queue", "list"])));
    assert!(list.contains("\tfailed\t1\t"), "{list}");
    assert!(
        !sink.dir.path().join("mail/1.eml").exists(),
        "nothing reached the office"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_is_never_given_up_for_a_server_without_starttls() {
    let c = cast_with(|config| config.queue.retry_base_ms = 50).await;
    let sink = Sink::start("accept");
    let (id, stop) = relay_to(&c, sink.port, office_cert()).await;
    stop.cancel();
    // The same office, now with TLS required (the default): aiosmtpd offers no STARTTLS.
    c.api.cli(
        &[
            "mailbox",
            "add",
            "--office",
            "amt2@kreis.example",
            "--name",
            "Kreis 2",
            "--relay",
            &format!("127.0.0.1:{}", sink.port),
            "--cert",
            c.api.gw.setup.path().join("kreis.asc").to_str().unwrap(),
        ],
        "",
    );
    drop(id);
    let anna = c.api.login("anna@lemgo.example").await;
    let body = crate::api::letter("amt2@kreis.example", "Vertraulich", "Nur mit TLS");
    let r = c.api.post("/api/v1/messages", &anna, body).await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
    let id = r.json()["gateway_id"].as_str().unwrap().to_owned();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    let mut error = String::new();
    for _ in 0..200 {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        let jobs = bote::store::messages::jobs_of(&mut conn, &id)
            .await
            .unwrap();
        if jobs[0].attempts >= 2 {
            let list = stdout(&run(c.api.gw.setup.cmd(&["queue", "list"])));
            error = list;
            break;
        }
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();
    assert!(error.contains("TLS is required, but 127.0.0.1:"), "{error}");
    assert!(error.contains("does not offer STARTTLS"), "{error}");
    // Nothing went out in the clear: the sink has only the first office's message.
    assert!(!sink.dir.path().join("mail/2.eml").exists());
}

/// With TLS required (the default), the office server's certificate must verify: against
/// a CA bote was not told to trust the message waits and nothing is sent; with that CA as
/// `tls.relay_ca` it goes out under TLS, and the evidence says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_verifies_the_servers_certificate_and_the_evidence_says_tls() {
    let c = cast_with(|config| config.queue.retry_base_ms = 50).await;
    let certs = c.api.gw.setup.path().join("certs");
    // The gateway's own development certificate (for 127.0.0.1), issued by its CA.
    let (cert, key) = (certs.join("server.crt"), certs.join("server.key"));
    let sink = Sink::start_with_tls("accept", (&cert, &key));
    add_kreis(&c, sink.port, office_cert(), "required");
    let anna = c.api.login("anna@lemgo.example").await;
    let body = crate::api::letter("amt@kreis.example", "Vertraulich", "Nur mit TLS");
    let r = c.api.post("/api/v1/messages", &anna, body).await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
    let id = r.json()["gateway_id"].as_str().unwrap().to_owned();

    // No relay_ca: the development CA is not among the web roots.
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    let mut list = String::new();
    for _ in 0..200 {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        let jobs = bote::store::messages::jobs_of(&mut conn, &id)
            .await
            .unwrap();
        if jobs[0].attempts >= 1 {
            list = stdout(&run(c.api.gw.setup.cmd(&["queue", "list"])));
            break;
        }
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();
    assert!(list.to_lowercase().contains("certificate"), "{list}");
    assert!(
        !sink.dir.path().join("mail/1.eml").exists(),
        "sent untrusted"
    );

    // The operator names the office server's CA.
    let c = cast_again(c, |config| {
        config.queue.retry_base_ms = 50;
        config.tls.relay_ca = config.tls.ca_cert.clone();
    });
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    let chain = wait_for(&c, &id, Event::RelayToNonERDS).await;
    stop.cancel();
    let relayed = &chain.last().unwrap().record;
    assert_eq!(
        relayed.details.tls_version.as_deref(),
        Some("TLS; required")
    );
    assert!(sink.dir.path().join("mail/1.eml").exists());
}

crate::on_both_backends!(
    a_relay_failing_for_half_the_expiry_shows_the_sender_a_delay_warning,
    super::delay_warning
);

async fn delay_warning(gw: Gateway) {
    let c = cast_again(cast(gw).await, |config| {
        config.queue.relay_expiry_secs = 3600;
        config.queue.retry_base_ms = 50;
    });
    let port = crate::support::free_port();
    let (id, stop) = relay_to(&c, port, office_cert()).await;
    let anna = c.api.login("anna@lemgo.example").await;
    let status = |reply: crate::api::Reply| {
        let json = reply.json();
        let line = json
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["gateway_id"] == id.as_str())
            .cloned()
            .unwrap();
        line["recipients"][0]["status"].as_str().unwrap().to_owned()
    };
    let sent = "/api/v1/mailboxes/anna@lemgo.example/sent";
    // Failing, but young: no warning yet.
    let mut attempts = 0;
    while attempts < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        attempts = bote::store::messages::jobs_of(&mut conn, &id)
            .await
            .unwrap()[0]
            .attempts;
    }
    assert_eq!(status(c.api.get(sent, &anna).await), "accepted");
    // The job is now 31 minutes old: the next deferral warns the sender.
    {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        let old = bote::clock::now_ms() - 31 * 60 * 1000;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbound_jobs SET created_at = {old} WHERE gateway_id = '{id}'"
        )))
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let mut seen = String::new();
    for _ in 0..200 {
        seen = status(c.api.get(sent, &anna).await);
        if seen == "delayed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "delayed");
    // No evidence for a warning: the chain is still the acceptance alone.
    let chain = {
        let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
        let to = bote::address::EmailAddress::parse("amt@kreis.example").unwrap();
        bote::evidence::query::chain(&mut conn, &id, Some(&to))
            .await
            .unwrap()
    };
    assert_eq!(chain.len(), 1);
    // The office's server comes back: delivered, and the warning is gone.
    let sink = Sink::start_on(port, "accept");
    wait_for(&c, &id, Event::RelayToNonERDS).await;
    assert_eq!(status(c.api.get(sent, &anna).await), "relayed");
    stop.cancel();
    drop(sink);
}

/// The same cast with its core reconfigured.
fn cast_again(mut c: Cast, edit: impl Fn(&mut bote::config::Config)) -> Cast {
    let mut config = c.api.gw.config.clone();
    edit(&mut config);
    c.api.core = bote::gateway::Gateway::from_parts(
        c.api.gw.store.clone(),
        Arc::new(config),
        c.api.gw.keys.clone(),
        c.api.gw.log.clone(),
        c.api.gw.writer.clone(),
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_status_notification_sent_back_later_becomes_a_relay_failure() {
    let c = cast_with(|config| config.smtp.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()])
        .await;
    let sink = Sink::start("accept");
    let (id, stop) = relay_to(&c, sink.port, office_cert()).await;
    wait_for(&c, &id, Event::RelayToNonERDS).await;
    let (wire, _) = sink.first().await;
    let message_id = wire
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap()
        .trim()
        .to_owned();

    // The office's server reports, over MX, that the mailbox does not exist after all.
    let port = crate::smtp::mx(c.api.core.clone(), &stop).await;
    let dsn = format!(
        "EHLO mail.kreis.example\nMAIL FROM:<>\nRCPT TO:<anna@lemgo.example>\nDATA\n\
         ~From: MAILER-DAEMON@kreis.example\n~To: anna@lemgo.example\n~Subject: Undelivered\n\
         ~Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n~\n\
         ~--b\n~Content-Type: message/delivery-status\n~\n~Reporting-MTA: dns; mail.kreis.example\n~\n\
         ~Final-Recipient: rfc822; amt@kreis.example\n~Action: failed\n~Status: 5.1.1\n\
         ~Diagnostic-Code: smtp; 550 5.1.1 Postfach unbekannt\n~\n\
         ~Final-Recipient: rfc822; AMT@kreis.example\n~Action: failed\n~Status: 5.1.1\n~\n~--b\n\
         ~Content-Type: text/rfc822-headers\n~\n~Message-ID: {message_id}\n~--b--\n.\nQUIT\n"
    );
    let ca = c.api.gw.config.tls.ca_cert.0.display().to_string();
    let send_dsn = || {
        let (ca, dsn) = (ca.clone(), dsn.clone());
        tokio::task::spawn_blocking(move || crate::smtp::raw_on(port, "plain", &ca, &dsn))
    };
    // A recipient named twice in the report is one failure; the same report sent twice at
    // once (two sessions) is recorded once, not as two heads of one chain (a fork, which
    // no bundle of the message would verify).
    let (one, two) = tokio::join!(send_dsn(), send_dsn());
    let outs = [one.unwrap(), two.unwrap()];
    let recorded = |n: usize| {
        let reply = format!("250 2.0.0 delivery status notification recorded for {n} recipient(s)");
        outs.iter().filter(|o| o.contains(&reply)).count()
    };
    assert_eq!((recorded(1), recorded(0)), (1, 1), "{outs:?}");
    let chain = wait_for(&c, &id, Event::RelayToNonERDSFailure).await;
    let failure = &chain.last().unwrap().record;
    assert_eq!(
        failure.details.reply.as_deref(),
        Some("DSN 5.1.1: 550 5.1.1 Postfach unbekannt")
    );
    assert_eq!(
        failure.details.remote_host.as_deref(),
        Some("mail.kreis.example")
    );
    assert_eq!(chain.len(), 3);
    // The same report again records nothing more.
    let out = send_dsn().await.unwrap();
    assert!(
        out.contains("250 2.0.0 delivery status notification recorded for 0 recipient(s)"),
        "{out}"
    );
    let recipient = bote::address::EmailAddress::parse("amt@kreis.example").unwrap();
    let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
    let again = bote::evidence::query::chain(&mut conn, &id, Some(&recipient))
        .await
        .unwrap();
    assert_eq!(again.len(), 3, "a DSN sent twice was recorded twice");
    drop(conn);
    // The operator sees the report on the delivered job.
    let jobs = stdout(&run(c.api.gw.setup.cmd(&["queue", "list", "--all"])));
    assert!(
        jobs.contains("done") && jobs.contains("DSN 5.1.1"),
        "{jobs}"
    );

    // Anything else from the null sender is refused.
    let spam = "EHLO x\nMAIL FROM:<>\nRCPT TO:<anna@lemgo.example>\nDATA\n~From: x@y.example\n~\n~hi\n.\nQUIT\n";
    let out = tokio::task::spawn_blocking(move || crate::smtp::raw_on(port, "plain", &ca, spam))
        .await
        .unwrap();
    assert!(
        out.contains("550 5.7.1 only delivery status notifications"),
        "{out}"
    );
    stop.cancel();
}

crate::on_both_backends!(
    several_gateways_on_one_database_send_every_job_exactly_once,
    super::exactly_once
);

/// Three gateway instances, each with its own connection pool and evidence writer (as three
/// processes would have), relay from one database: every queued job reaches the office once.
async fn exactly_once(gw: Gateway) {
    const MESSAGES: usize = 24;
    let c = cast(gw).await;
    let sink = Sink::start("accept");
    let (first, stop_first) = relay_to(&c, sink.port, office_cert()).await;
    wait_for(&c, &first, Event::RelayToNonERDS).await;
    stop_first.cancel();
    let anna = c.api.login("anna@lemgo.example").await;
    let mut ids = Vec::new();
    for n in 0..MESSAGES {
        let body = crate::api::letter("amt@kreis.example", &format!("Antrag {n}"), "Text");
        let r = c.api.post("/api/v1/messages", &anna, body).await;
        assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
        ids.push(r.json()["gateway_id"].as_str().unwrap().to_owned());
    }
    let gw = &c.api.gw;
    let stop = tokio_util::sync::CancellationToken::new();
    for _ in 0..3 {
        let store = bote::store::Store::open(&gw.config, bote::store::OpenMode::Existing)
            .await
            .unwrap();
        let writer = bote::evidence::Writer::spawn(store.clone(), gw.log.clone());
        let instance = bote::gateway::Gateway::from_parts(
            store,
            Arc::new(gw.config.clone()),
            gw.keys.clone(),
            gw.log.clone(),
            writer,
        );
        tokio::spawn(bote::queue::RelayWorker::new(instance).run(stop.clone()));
    }
    for id in &ids {
        let chain = wait_for(&c, id, Event::RelayToNonERDS).await;
        let relayed = chain
            .iter()
            .filter(|e| e.record.event == Event::RelayToNonERDS)
            .count();
        assert_eq!(relayed, 1, "{id}: {relayed} relay records");
    }
    // Give a duplicate time to arrive before counting.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.cancel();
    let mail = sink.dir.path().join("mail");
    let delivered = std::fs::read_dir(&mail)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count();
    assert_eq!(
        delivered,
        MESSAGES + 1,
        "the office got a message twice or not at all"
    );
    let mut conn = gw.store.pool().acquire().await.unwrap();
    for id in &ids {
        let jobs = bote::store::messages::jobs_of(&mut conn, id).await.unwrap();
        assert_eq!(
            (jobs[0].state.as_str(), jobs[0].attempts),
            ("done", 1),
            "{id}"
        );
    }
}

crate::on_both_backends!(
    relay_outcomes_of_one_batch_are_written_together,
    super::outcomes_together
);

/// Relay outcomes that reach the evidence writer together end their jobs in shared
/// statements: a delivered job loses its payload, a failed one keeps it with its reason,
/// and a job whose lease another worker took meanwhile fails alone while the others
/// commit.
async fn outcomes_together(gw: Gateway) {
    use bote::store::queue::{JobEnd, claim_due};
    let c = cast(gw).await;
    let first = queue_relay(&c, crate::support::free_port(), office_cert()).await;
    let anna = c.api.login("anna@lemgo.example").await;
    let mut ids = vec![first];
    for n in 0..5 {
        let body = crate::api::letter("amt@kreis.example", &format!("Antrag {n}"), "Text");
        let r = c.api.post("/api/v1/messages", &anna, body).await;
        assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
        ids.push(r.json()["gateway_id"].as_str().unwrap().to_owned());
    }
    let gw = &c.api.gw;
    let mut conn = gw.store.pool().acquire().await.unwrap();
    let now = bote::clock::now_ms();
    let claimed = claim_due(&mut conn, "worker-a", now, now + 60_000, 10)
        .await
        .unwrap();
    let mut jobs = Vec::new();
    for id in &ids {
        jobs.push(bote::store::messages::jobs_of(&mut conn, id).await.unwrap()[0].id);
    }
    assert_eq!(claimed.len(), 6);
    sqlx::query("UPDATE outbound_jobs SET lease_owner = 'worker-b' WHERE id = $1")
        .bind(jobs[5])
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let end = |id: i64, state: &'static str, error: Option<&str>| JobEnd {
        id,
        owner: "worker-a".into(),
        state,
        error: error.map(str::to_owned),
    };
    // A linger long enough for the requests sent together to share one batch.
    let writer = bote::evidence::Writer::spawn_with_linger(
        gw.store.clone(),
        gw.log.clone(),
        std::time::Duration::from_secs(1),
    );
    // Three delivered (one IN list, padded to four) and one failed, together.
    let together = futures_util::future::join_all([
        writer.commit_relay_outcome(Vec::new(), end(jobs[0], "done", None)),
        writer.commit_relay_outcome(Vec::new(), end(jobs[1], "failed", Some("RB07"))),
        writer.commit_relay_outcome(Vec::new(), end(jobs[2], "done", None)),
        writer.commit_relay_outcome(Vec::new(), end(jobs[3], "done", None)),
    ])
    .await;
    assert!(together.iter().all(Result::is_ok), "{together:?}");
    let (delivered, stolen) = tokio::join!(
        writer.commit_relay_outcome(Vec::new(), end(jobs[4], "done", None)),
        writer.commit_relay_outcome(Vec::new(), end(jobs[5], "done", None)),
    );
    delivered.unwrap();
    let lost = stolen.expect_err("the stolen job's lease was lost");
    assert!(lost.to_string().contains("lease was lost"), "{lost}");
    let mut conn = gw.store.pool().acquire().await.unwrap();
    let state = |row: sqlx::any::AnyRow| -> (String, Option<String>, Option<String>, i64) {
        use sqlx::Row;
        (row.get(0), row.get(1), row.get(2), row.get::<i64, _>(3))
    };
    let mut seen = Vec::new();
    for job in &jobs {
        let row = sqlx::query(
            "SELECT state, last_error, lease_owner, \
             (SELECT COUNT(*) FROM outbound_payloads p WHERE p.job_id = j.id) \
             FROM outbound_jobs j WHERE id = $1",
        )
        .bind(job)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        seen.push(state(row));
    }
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        seen,
        vec![
            ("done".into(), None, None, 0),
            ("failed".into(), s("RB07"), None, 1),
            ("done".into(), None, None, 0),
            ("done".into(), None, None, 0),
            ("done".into(), None, None, 0),
            ("running".into(), None, s("worker-b"), 1),
        ]
    );
}

/// The office's server receives each stored relay payload byte for byte: one stored whole
/// (as before the parts format) as it was stored, one stored in parts with its encrypted
/// body armoured in; a line that starts with a dot arrives unstuffed by the server
/// (aiosmtpd), the end-of-data line adds no empty line, and content beyond ASCII (which
/// bote's own PGP/MIME never has) still goes out, through lettre's own transaction with
/// 8BITMIME (which adds an empty line at the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_office_receives_each_payload_byte_for_byte() {
    let c = cast_with(|_| {}).await;
    let sink = Sink::start("accept");
    let first = queue_relay(&c, sink.port, office_cert()).await;
    let anna = c.api.login("anna@lemgo.example").await;
    let body = crate::api::letter("amt@kreis.example", "Nachtrag", "Anlage");
    let r = c.api.post("/api/v1/messages", &anna, body).await;
    assert_eq!(r.status, axum::http::StatusCode::CREATED, "{}", r.text());
    let second = r.json()["gateway_id"].as_str().unwrap().to_owned();

    let mut conn = c.api.gw.store.pool().acquire().await.unwrap();
    let mut expected = Vec::new();
    for (id, extra) in [
        (
            &first,
            "\r\n.Punkt am Zeilenanfang\r\n.\r\n..\r\nEnde\r\n".as_bytes(),
        ),
        (&second, "\r\nGr\u{fc}\u{df}e aus Lemgo\r\n".as_bytes()),
    ] {
        let stored: Vec<u8> = sqlx::query_scalar(
            "SELECT p.payload FROM outbound_payloads p \
             JOIN outbound_jobs j ON j.id = p.job_id WHERE j.gateway_id = $1",
        )
        .bind(id.as_str())
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert!(stored.ends_with(b"\r\n"));
        // Stored unarmoured in parts: what leaves has the encrypted body armoured in.
        let render = |stored: &[u8]| {
            let [head, binary, tail] = bote::message::mime::stored_pgp_mime_parts(stored)
                .unwrap()
                .expect("a payload stored in parts");
            let armored = bote::crypto::message::armor(binary).unwrap();
            [head, &armored[..], tail].concat()
        };
        // The first as a payload stored whole, as bote stored them before the parts: it
        // leaves as it is.
        let stored = if id == &first {
            render(&stored)
        } else {
            stored
        };
        // The extra lines go before the closing CRLF, as if the message had them.
        let mut payload = stored[..stored.len() - 2].to_vec();
        payload.extend_from_slice(extra);
        sqlx::query(
            "UPDATE outbound_payloads SET payload = $1 WHERE job_id = \
             (SELECT id FROM outbound_jobs WHERE gateway_id = $2)",
        )
        .bind(payload.clone())
        .bind(id.as_str())
        .execute(&mut *conn)
        .await
        .unwrap();
        let mut arrives = if id == &first {
            payload.clone()
        } else {
            render(&payload)
        };
        if !arrives.is_ascii() {
            // lettre's own transaction writes CRLF . CRLF after the content: one empty
            // line more at the end, after the closing MIME boundary.
            arrives.extend_from_slice(b"\r\n");
        }
        expected.push(arrives);
    }
    drop(conn);

    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(bote::queue::RelayWorker::new(c.api.core.clone()).run(stop.clone()));
    wait_for(&c, &first, Event::RelayToNonERDS).await;
    wait_for(&c, &second, Event::RelayToNonERDS).await;
    stop_worker(&stop, worker).await;
    let mut received: Vec<Vec<u8>> = (1..=2)
        .map(|n| std::fs::read(sink.dir.path().join(format!("mail/{n}.eml"))).unwrap())
        .collect();
    received.sort();
    expected.sort();
    assert_eq!(received, expected);
}
