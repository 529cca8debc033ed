#!/usr/bin/env bash
# A private Postfix instance: its own config, queue and data directories under DIR, no chroot,
# listening on 127.0.0.1:PORT only, logging to DIR/maillog. It never touches the system's
# Postfix (/etc/postfix, port 25), running or not. Needs root (Postfix's master does).
#
#   postfix_instance.sh start DIR PORT RELAYHOST [NAME=VALUE ...]
#       RELAYHOST e.g. [127.0.0.1]:2525: where everything not local goes. Extra main.cf
#       settings follow (e.g. virtual_mailbox_domains=kreis.example).
#   postfix_instance.sh stop DIR
#
# Used by tests/it/postfix.rs and benches/smtp_relay/run.sh.
set -euo pipefail

cmd=${1:?start|stop}
dir=${2:?DIR}
conf="$dir/etc"

case "$cmd" in
stop)
  if [ -f "$conf/main.cf" ]; then
    postfix -c "$conf" stop >/dev/null 2>&1 || true
  fi
  exit 0
  ;;
start) ;;
*)
  echo "postfix_instance.sh: unknown command $cmd" >&2
  exit 2
  ;;
esac

port=${3:?PORT}
relayhost=${4:?RELAYHOST}
shift 4
mkdir -p "$conf" "$dir/queue" "$dir/data"
chown postfix "$dir/data"

cat >"$conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = $relayhost
smtputf8_enable = no
biff = no
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
syslog_name = postfix-private
EOF
for setting in "$@"; do
  echo "${setting%%=*} = ${setting#*=}" >>"$conf/main.cf"
done

# Debian's master.cf, without chroot, without the port 25 listener, plus ours.
cat >"$conf/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF

postfix -c "$conf" start >"$dir/start.log" 2>&1 || {
  cat "$dir/start.log" >&2
  exit 1
}
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    exit 0
  fi
  sleep 0.05
done
echo "postfix_instance.sh: nothing listens on 127.0.0.1:$port" >&2
cat "$dir/start.log" "$dir/maillog" >&2 2>/dev/null || true
exit 1
