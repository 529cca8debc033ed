//! The one translation table of the web inbox: every text a page shows, in English and
//! German, by key. Failure codes of the core (`Failure::code`) are keys too, so a refusal
//! reads as a sentence in the page language. The language comes from the switch's cookie,
//! else from Accept-Language.

use std::collections::HashMap;
use std::sync::LazyLock;

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// German.
    De,
}

impl Lang {
    /// `en` or `de`.
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::De => "de",
        }
    }

    /// A language code, if the table has it.
    pub fn parse(code: &str) -> Option<Self> {
        match code.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Self::En),
            "de" => Some(Self::De),
            _ => None,
        }
    }

    /// The best language for an Accept-Language header (RFC 9110 §12.5.4: highest `q`
    /// first, ties in order; a subtag such as `de-AT` matches `de`).
    pub fn negotiate(header: &str) -> Self {
        let mut best: Option<(f32, Self)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or_default().trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or_default();
            if let Some(lang) = Self::parse(primary)
                && q > 0.0
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map_or(Self::En, |(_, l)| l)
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// (key, English, German).
const TABLE: &[(&str, &str, &str)] = &[
    // Chrome
    ("skip-to-content", "Skip to content", "Zum Inhalt springen"),
    ("nav-label", "Main navigation", "Hauptnavigation"),
    ("nav-inbox", "Inbox", "Posteingang"),
    ("nav-sent", "Sent", "Gesendet"),
    ("nav-compose", "Write", "Schreiben"),
    ("nav-security", "Security", "Sicherheit"),
    ("nav-evidence", "Evidence", "Nachweise"),
    ("level-label", "Security level", "Sicherheitsniveau"),
    ("level-normal", "normal", "normal"),
    ("level-high", "high", "hoch"),
    (
        "level-none",
        "none (outside the registered delivery system)",
        "keines (außerhalb des Zustellsystems)",
    ),
    ("logout", "Log out", "Abmelden"),
    (
        "footer",
        "secure, verifiable delivery for public administrations",
        "sichere, nachweisbare Zustellung für Verwaltungen",
    ),
    ("error", "Something went wrong", "Etwas ist schiefgegangen"),
    (
        "back-to-start",
        "Back to the start page",
        "Zurück zur Startseite",
    ),
    // Login, recovery, security
    ("login-title", "Log in", "Anmelden"),
    ("email", "Email address", "E-Mail-Adresse"),
    ("password", "Password", "Passwort"),
    ("login", "Log in", "Anmelden"),
    (
        "forgot-password",
        "Forgot your password? Use your recovery code",
        "Passwort vergessen? Mit dem Wiederherstellungscode zurücksetzen",
    ),
    (
        "notice-logged-out",
        "You are logged out.",
        "Sie sind abgemeldet.",
    ),
    (
        "notice-recovered",
        "Your password is set. Log in with it; your mail is still readable.",
        "Ihr Passwort ist gesetzt. Melden Sie sich damit an; Ihre Nachrichten bleiben lesbar.",
    ),
    (
        "csrf-refused",
        "This form was refused: it did not come from a page of this site, or it has expired. Please reload the page and try again.",
        "Dieses Formular wurde abgelehnt: Es stammt nicht von einer Seite dieses Dienstes oder ist abgelaufen. Bitte laden Sie die Seite neu und versuchen Sie es noch einmal.",
    ),
    (
        "recover-title",
        "Reset your password",
        "Passwort zurücksetzen",
    ),
    (
        "recover-intro",
        "With the recovery code you received when your account was created you can set a new password and keep reading your mail. All your sessions end.",
        "Mit dem Wiederherstellungscode, den Sie bei der Einrichtung Ihres Kontos erhalten haben, setzen Sie ein neues Passwort und können Ihre Nachrichten weiter lesen. Alle Ihre Sitzungen werden beendet.",
    ),
    ("recovery-code", "Recovery code", "Wiederherstellungscode"),
    ("new-password", "New password", "Neues Passwort"),
    (
        "password-hint",
        "At least 12 characters.",
        "Mindestens 12 Zeichen.",
    ),
    (
        "recover-submit",
        "Set new password",
        "Neues Passwort setzen",
    ),
    (
        "recover-failed",
        "The email address or the recovery code is wrong.",
        "E-Mail-Adresse oder Wiederherstellungscode ist falsch.",
    ),
    (
        "recovery-code-wrong",
        "The recovery code is wrong, or is needed for this step.",
        "Der Wiederherstellungscode ist falsch oder wird für diesen Schritt benötigt.",
    ),
    ("security-title", "Security", "Sicherheit"),
    (
        "level-normal-explained",
        "Your session is at level normal (password only). To send authoritative messages or open personal ones, raise it to level high with a one-time code from your authenticator app.",
        "Ihre Sitzung hat das Niveau normal (nur Passwort). Um absenderbestätigte Nachrichten zu senden oder persönliche zu öffnen, heben Sie es mit einem Einmalcode Ihrer Authenticator-App auf hoch an.",
    ),
    (
        "level-high-explained",
        "Your session is at level high (password and one-time code).",
        "Ihre Sitzung hat das Niveau hoch (Passwort und Einmalcode).",
    ),
    (
        "notice-high",
        "Your session is now at level high.",
        "Ihre Sitzung hat jetzt das Niveau hoch.",
    ),
    (
        "totp-enrol",
        "Set up a second factor",
        "Zweiten Faktor einrichten",
    ),
    (
        "totp-enrol-explained",
        "A second factor is a six-digit code from an authenticator app on your phone. Setting up the first one needs your recovery code, so that a stolen password alone never gives level high.",
        "Ein zweiter Faktor ist ein sechsstelliger Code aus einer Authenticator-App auf Ihrem Telefon. Für die erste Einrichtung brauchen Sie Ihren Wiederherstellungscode, damit ein gestohlenes Passwort allein nie das Niveau hoch ergibt.",
    ),
    (
        "totp-replace",
        "Replace the second factor",
        "Zweiten Faktor ersetzen",
    ),
    (
        "totp-replace-explained",
        "Replacing your second factor needs a session at level high.",
        "Zum Ersetzen des zweiten Faktors brauchen Sie eine Sitzung mit Niveau hoch.",
    ),
    (
        "totp-scan",
        "Scan this code with your authenticator app",
        "Scannen Sie diesen Code mit Ihrer Authenticator-App",
    ),
    (
        "totp-scan-explained",
        "Then enter the code the app shows below: this confirms the second factor and raises your session to level high.",
        "Geben Sie dann unten den Code ein, den die App anzeigt: Das bestätigt den zweiten Faktor und hebt Ihre Sitzung auf das Niveau hoch.",
    ),
    (
        "totp-qr-label",
        "QR code of the second factor's secret",
        "QR-Code des Geheimnisses für den zweiten Faktor",
    ),
    (
        "totp-uri",
        "If you cannot scan, enter this address in the app:",
        "Falls Sie nicht scannen können, geben Sie diese Adresse in der App ein:",
    ),
    ("step-up", "Raise to level high", "Auf Niveau hoch anheben"),
    ("totp-code", "One-time code", "Einmalcode"),
    (
        "totp-code-hint",
        "Six digits from your authenticator app.",
        "Sechs Ziffern aus Ihrer Authenticator-App.",
    ),
    ("step-up-submit", "Confirm code", "Code bestätigen"),
    ("sessions", "Sessions", "Sitzungen"),
    (
        "logout-everywhere",
        "Log out everywhere",
        "Überall abmelden",
    ),
    (
        "logout-everywhere-explained",
        "Ends every session of your account, on all devices, including this one.",
        "Beendet alle Sitzungen Ihres Kontos auf allen Geräten, auch diese.",
    ),
    // Settings
    ("nav-settings", "Settings", "Einstellungen"),
    ("settings-title", "Settings", "Einstellungen"),
    ("directory", "Directory", "Verzeichnis"),
    (
        "directory-publish",
        "List my mailbox in the public directory",
        "Mein Postfach im öffentlichen Verzeichnis anzeigen",
    ),
    (
        "directory-publish-explained",
        "Then anyone can find your address and its encryption key (also by WKD) and write to you encrypted end to end. Logged-in users of this gateway find you either way.",
        "Dann kann jeder Ihre Adresse und ihren Verschlüsselungsschlüssel finden (auch per WKD) und Ihnen Ende-zu-Ende verschlüsselt schreiben. Angemeldete Nutzer dieses Gateways finden Sie in jedem Fall.",
    ),
    ("save", "Save", "Speichern"),
    (
        "tokens",
        "Tokens for office software",
        "Zugangsschlüssel für Fachverfahren",
    ),
    (
        "tokens-explained",
        "A read token lets office software (a Fachverfahren) read and send the mail of an office mailbox over the API or SMTP. Only a member can create one, because it carries the mailbox's key; it is shown once.",
        "Ein Lese-Zugangsschlüssel erlaubt einem Fachverfahren, die Post eines Behördenpostfachs über die API oder SMTP zu lesen und zu senden. Nur ein Mitglied kann ihn erstellen, weil er den Schlüssel des Postfachs trägt; er wird nur einmal angezeigt.",
    ),
    (
        "token-create",
        "Create read token",
        "Lese-Zugangsschlüssel erstellen",
    ),
    (
        "token-created",
        "Copy this token now; it is not shown again. Read token for",
        "Kopieren Sie diesen Schlüssel jetzt; er wird nicht wieder angezeigt. Lese-Zugangsschlüssel für",
    ),
    (
        "tokens-yours",
        "Tokens you created",
        "Von Ihnen erstellte Zugangsschlüssel",
    ),
    ("created", "Created", "Erstellt"),
    ("state", "State", "Zustand"),
    ("revoked", "revoked", "widerrufen"),
    ("revoke", "Revoke", "Widerrufen"),
    (
        "token-revoked",
        "The token is revoked: it opens nothing from now on.",
        "Der Zugangsschlüssel ist widerrufen: Er öffnet ab jetzt nichts mehr.",
    ),
    (
        "own-password",
        "Your password and key",
        "Ihr Passwort und Ihr Schlüssel",
    ),
    (
        "own-password-first",
        "Your first password, your key and its recovery code were made by the operator. Choose your own password: bote then makes you a new key and recovery code that only you know. Until you do, colleagues cannot give you access to an office mailbox.",
        "Ihr erstes Passwort, Ihr Schlüssel und dessen Wiederherstellungscode wurden vom Betrieb erstellt. Wählen Sie Ihr eigenes Passwort: bote erstellt Ihnen dann einen neuen Schlüssel und Wiederherstellungscode, die nur Sie kennen. Bis dahin können Kolleginnen und Kollegen Ihnen keinen Zugang zu einem Behördenpostfach geben.",
    ),
    (
        "own-password-explained",
        "Changing your password also makes you a new key and recovery code; your mail stays readable.",
        "Eine Passwortänderung erstellt Ihnen auch einen neuen Schlüssel und Wiederherstellungscode; Ihre Post bleibt lesbar.",
    ),
    (
        "own-password-nudge",
        "You still use the first password the operator gave you, and so a key the operator could open. Choose your own password: bote then makes you a key only you hold.",
        "Sie verwenden noch das erste Passwort vom Betrieb und damit einen Schlüssel, den der Betrieb öffnen könnte. Wählen Sie Ihr eigenes Passwort: bote erstellt Ihnen dann einen Schlüssel, den nur Sie halten.",
    ),
    (
        "own-key-made-at",
        "Your key was made by a password change on",
        "Ihr Schlüssel wurde durch eine Passwortänderung erstellt am",
    ),
    (
        "own-key-made-check",
        "If you did not choose your password yourself then, someone else did: change it now.",
        "Wenn Sie Ihr Passwort damals nicht selbst gewählt haben, hat es jemand anderes getan: Ändern Sie es jetzt.",
    ),
    ("password-current", "Current password", "Aktuelles Passwort"),
    ("password-new", "New password", "Neues Passwort"),
    (
        "own-password-submit",
        "Change password and make my key",
        "Passwort ändern und Schlüssel erstellen",
    ),
    ("own-key-made-title", "Your new key", "Ihr neuer Schlüssel"),
    (
        "own-key-made",
        "Your password is changed and your new key is made. Every session has ended: log in again with the new password.",
        "Ihr Passwort ist geändert und Ihr neuer Schlüssel erstellt. Alle Sitzungen sind beendet: Melden Sie sich mit dem neuen Passwort wieder an.",
    ),
    (
        "own-key-recovery",
        "Write down this recovery code now and keep it offline: it is shown only this once, and it opens your key if you forget your password.",
        "Notieren Sie diesen Wiederherstellungscode jetzt und bewahren Sie ihn offline auf: Er wird nur dieses eine Mal angezeigt und öffnet Ihren Schlüssel, falls Sie Ihr Passwort vergessen.",
    ),
    ("login-again", "Log in again", "Erneut anmelden"),
    (
        "wrong-password",
        "The current password is wrong.",
        "Das aktuelle Passwort ist falsch.",
    ),
    (
        "own-key-not-yet",
        "Choose your own password under Security first: bote then makes you a key that only you hold, and a colleague can give you access to an office mailbox.",
        "Wählen Sie zuerst unter Sicherheit Ihr eigenes Passwort: bote erstellt Ihnen dann einen Schlüssel, den nur Sie halten, und eine Kollegin oder ein Kollege kann Ihnen Zugang zu einem Behördenpostfach geben.",
    ),
    ("own-key", "Your key", "Ihr Schlüssel"),
    (
        "own-key-explained",
        "When an operator adds you to an office mailbox, a member of it gives you its key after comparing this fingerprint with you (in person or by phone):",
        "Wenn der Betrieb Sie einem Behördenpostfach hinzufügt, gibt Ihnen ein Mitglied dessen Schlüssel, nachdem es diesen Fingerabdruck mit Ihnen verglichen hat (persönlich oder am Telefon):",
    ),
    ("grants", "Access requests", "Zugangsanfragen"),
    (
        "grants-explained",
        "The operator asked for these colleagues to read an office mailbox you belong to. The operator cannot give them its key; you can. Compare the fingerprint with the colleague in person or by phone first: if it differs, someone else holds that key.",
        "Der Betrieb hat beantragt, dass diese Kolleginnen und Kollegen ein Behördenpostfach lesen, dem Sie angehören. Der Betrieb kann ihnen den Schlüssel nicht geben; Sie können es. Vergleichen Sie vorher den Fingerabdruck mit der Person, persönlich oder am Telefon: Weicht er ab, hält jemand anderes diesen Schlüssel.",
    ),
    (
        "grants-waiting",
        "A colleague waits for access to an office mailbox you belong to:",
        "Eine Person wartet auf Zugang zu einem Behördenpostfach, dem Sie angehören:",
    ),
    ("colleague", "Colleague", "Person"),
    (
        "fingerprint",
        "Key fingerprint",
        "Fingerabdruck des Schlüssels",
    ),
    ("requested-by", "Requested by", "Beantragt von"),
    (
        "grant-compared",
        "I compared this fingerprint with",
        "Ich habe diesen Fingerabdruck verglichen mit",
    ),
    ("grant-confirm", "Give access", "Zugang geben"),
    (
        "grant-confirmed",
        "Access given: the colleague can now read the mailbox.",
        "Zugang gegeben: Die Person kann das Postfach jetzt lesen.",
    ),
    (
        "grant-not-compared",
        "Tick the box once you have compared the fingerprint with the colleague.",
        "Setzen Sie das Häkchen, sobald Sie den Fingerabdruck mit der Person verglichen haben.",
    ),
    (
        "grant-key-changed",
        "The colleague's key changed since this page was shown: compare the new fingerprint with them again.",
        "Der Schlüssel der Person hat sich geändert, seit diese Seite angezeigt wurde: Vergleichen Sie den neuen Fingerabdruck noch einmal mit ihr.",
    ),
    // Folders
    ("folder-inbox", "Inbox", "Posteingang"),
    (
        "folder-sent",
        "Sent messages and receipts",
        "Gesendete Nachrichten und Quittungen",
    ),
    ("mailbox", "Mailbox", "Postfach"),
    ("switch-mailbox", "Show mailbox", "Postfach anzeigen"),
    (
        "folder-empty",
        "No messages here yet.",
        "Hier sind noch keine Nachrichten.",
    ),
    (
        "folder-no-more",
        "No older messages.",
        "Keine älteren Nachrichten.",
    ),
    ("from", "From", "Von"),
    ("to", "To", "An"),
    ("subject", "Subject", "Betreff"),
    ("date", "Date", "Datum"),
    ("options", "Options", "Optionen"),
    ("receipts", "Receipts", "Quittungen"),
    ("newest", "Newest messages", "Neueste Nachrichten"),
    ("older", "Older messages", "Ältere Nachrichten"),
    (
        "subject-hidden",
        "(personal: open at level high)",
        "(persönlich: mit Niveau hoch öffnen)",
    ),
    ("status-accepted", "accepted", "angenommen"),
    (
        "status-consigned",
        "delivered to the mailbox",
        "ins Postfach zugestellt",
    ),
    (
        "status-relayed",
        "handed to the recipient's server",
        "an den Server des Empfängers übergeben",
    ),
    ("status-picked-up", "picked up", "abgeholt"),
    ("status-failed", "failed", "fehlgeschlagen"),
    ("status-other", "unknown", "unbekannt"),
    (
        "opt-authoritative",
        "Sender confirmed (authoritative)",
        "Absenderbestätigt",
    ),
    ("opt-personal", "Personal", "Persönlich"),
    (
        "opt-retrieval",
        "Retrieval confirmation",
        "Abholbestätigung",
    ),
    // Message
    ("message-title", "Message", "Nachricht"),
    (
        "handover-recorded",
        "Opening this message was recorded as its pickup (ContentHandover); the sender sees it.",
        "Das Öffnen dieser Nachricht wurde als Abholung (ContentHandover) festgehalten; der Absender sieht das.",
    ),
    ("attestation", "Who sent it", "Wer sie gesendet hat"),
    (
        "attested-sender",
        "Sender, confirmed by the gateway",
        "Absender, vom Gateway bestätigt",
    ),
    ("identity", "Identity", "Identität"),
    ("identity-verified", "verified", "geprüft"),
    ("identity-unverified", "not verified", "nicht geprüft"),
    (
        "sender-level",
        "Sender's security level",
        "Sicherheitsniveau des Absenders",
    ),
    (
        "yes-authoritative",
        "yes: the gateway confirms a verified sender who logged in with two factors",
        "ja: das Gateway bestätigt einen geprüften Absender, der mit zwei Faktoren angemeldet war",
    ),
    ("no", "no", "nein"),
    (
        "attestation-missing",
        "The gateway's signature on this message could not be verified.",
        "Die Signatur des Gateways an dieser Nachricht konnte nicht geprüft werden.",
    ),
    (
        "end-to-end",
        "The sender encrypted this message end to end to this mailbox.",
        "Der Absender hat diese Nachricht Ende-zu-Ende an dieses Postfach verschlüsselt.",
    ),
    ("body", "Message", "Nachricht"),
    (
        "html-frame",
        "Formatted message (images and links from the internet are blocked)",
        "Formatierte Nachricht (Bilder und Inhalte aus dem Internet sind blockiert)",
    ),
    ("attachments", "Attachments", "Anhänge"),
    ("plain-text", "Plain-text version", "Textfassung"),
    (
        "timeline",
        "What happened to it (evidence)",
        "Was mit ihr geschah (Nachweise)",
    ),
    ("proof", "Proof", "Nachweis"),
    (
        "proof-explained",
        "The proof bundle holds the signed evidence of this message and how to check it offline, with gpg or bote verify, without trusting this gateway.",
        "Das Nachweispaket enthält die signierten Nachweise dieser Nachricht und die Anleitung, sie offline mit gpg oder bote verify zu prüfen, ohne diesem Gateway vertrauen zu müssen.",
    ),
    ("download-proof", "Download proof", "Nachweis herunterladen"),
    (
        "ev-SubmissionAcceptance",
        "The gateway accepted the message complete and recorded its digest: proof of sending.",
        "Das Gateway hat die Nachricht vollständig angenommen und ihren Hashwert festgehalten: Nachweis des Versands.",
    ),
    (
        "ev-SubmissionRejection",
        "The gateway refused the message (see the reason); nothing was delivered.",
        "Das Gateway hat die Nachricht abgelehnt (siehe Grund); nichts wurde zugestellt.",
    ),
    (
        "ev-RelayAcceptance",
        "The recipient's gateway accepted the message.",
        "Das Gateway des Empfängers hat die Nachricht angenommen.",
    ),
    (
        "ev-RelayRejection",
        "The recipient's gateway refused the message.",
        "Das Gateway des Empfängers hat die Nachricht abgelehnt.",
    ),
    (
        "ev-RelayFailure",
        "The message could not be passed to the recipient's gateway.",
        "Die Nachricht konnte nicht an das Gateway des Empfängers übergeben werden.",
    ),
    (
        "ev-RelayToNonERDS",
        "The office's own mail server accepted the message.",
        "Der eigene Mailserver der Behörde hat die Nachricht angenommen.",
    ),
    (
        "ev-RelayToNonERDSFailure",
        "The office's own mail server did not accept the message.",
        "Der eigene Mailserver der Behörde hat die Nachricht nicht angenommen.",
    ),
    (
        "ev-ReceivedFromNonERDS",
        "The message came from a registered office mail server outside the registered delivery system.",
        "Die Nachricht kam von einem registrierten Mailserver einer Behörde außerhalb des Zustellsystems.",
    ),
    (
        "ev-ContentConsignment",
        "The message was placed in the recipient's mailbox: proof of delivery.",
        "Die Nachricht wurde in das Postfach des Empfängers gelegt: Nachweis der Zustellung.",
    ),
    (
        "ev-ContentConsignmentFailure",
        "The message could not be placed in the recipient's mailbox.",
        "Die Nachricht konnte nicht in das Postfach des Empfängers gelegt werden.",
    ),
    (
        "ev-ContentHandover",
        "The recipient opened the message: proof of pickup.",
        "Der Empfänger hat die Nachricht geöffnet: Nachweis der Abholung.",
    ),
    (
        "ev-ContentHandoverFailure",
        "The message could not be handed over to the recipient.",
        "Die Nachricht konnte dem Empfänger nicht übergeben werden.",
    ),
    ("ev-other", "Evidence.", "Nachweis."),
    // Compose
    ("compose-title", "Write a message", "Nachricht schreiben"),
    (
        "to-hint",
        "One or more addresses, separated by commas. Look them up to see whether they can receive messages here.",
        "Eine oder mehrere Adressen, durch Kommas getrennt. Prüfen Sie, ob sie hier Nachrichten empfangen können.",
    ),
    (
        "to-empty",
        "Enter at least one recipient.",
        "Geben Sie mindestens einen Empfänger an.",
    ),
    ("lookup", "Look up recipients", "Empfänger prüfen"),
    (
        "lookup-found",
        "found in the directory",
        "im Verzeichnis gefunden",
    ),
    (
        "lookup-missing",
        "not in the directory: messages to this address will be refused",
        "nicht im Verzeichnis: Nachrichten an diese Adresse werden abgelehnt",
    ),
    ("kind-citizen", "citizen", "Bürgerin oder Bürger"),
    ("kind-office", "office", "Behörde"),
    ("text", "Text", "Text"),
    (
        "attachments-hint",
        "Files are attached with their exact content and digest. The whole message may be at most",
        "Dateien werden mit ihrem genauen Inhalt und Hashwert angehängt. Die ganze Nachricht darf höchstens so groß sein:",
    ),
    (
        "opt-authoritative-explained",
        "The gateway confirms to the recipient that you sent this message, with a verified identity and logged in with two factors (like a signed letter).",
        "Das Gateway bestätigt dem Empfänger, dass Sie diese Nachricht gesendet haben, mit geprüfter Identität und mit zwei Faktoren angemeldet (wie ein unterschriebener Brief).",
    ),
    (
        "needs-high-hint",
        "Your session is at level normal: raise it to high under Security first, or the message will be refused.",
        "Ihre Sitzung hat das Niveau normal: Heben Sie es zuerst unter Sicherheit auf hoch an, sonst wird die Nachricht abgelehnt.",
    ),
    (
        "needs-verified-hint",
        "Your identity is not verified yet: the message would be refused.",
        "Ihre Identität ist noch nicht geprüft: Die Nachricht würde abgelehnt.",
    ),
    (
        "opt-personal-explained",
        "Only the recipient in person can open it, after logging in with two factors.",
        "Nur der Empfänger persönlich kann sie öffnen, nach Anmeldung mit zwei Faktoren.",
    ),
    (
        "opt-retrieval-explained",
        "For formal service: the citizen's first opening at level high is recorded as pickup.",
        "Für förmliche Zustellung: Das erste Öffnen durch die Bürgerin oder den Bürger mit Niveau hoch wird als Abholung festgehalten.",
    ),
    ("send", "Send", "Senden"),
    (
        "sent-accepted",
        "Your message was accepted (SubmissionAcceptance). The receipt is under Sent.",
        "Ihre Nachricht wurde angenommen (SubmissionAcceptance). Die Quittung finden Sie unter Gesendet.",
    ),
    ("gateway-id", "Message number", "Nachrichtennummer"),
    (
        "too-large-upload",
        "The message with its attachments is too large. Please attach your files again; the limit is",
        "Die Nachricht mit ihren Anhängen ist zu groß. Bitte hängen Sie Ihre Dateien erneut an; die Grenze ist",
    ),
    (
        "form-malformed",
        "The form could not be read. Please try again.",
        "Das Formular konnte nicht gelesen werden. Bitte versuchen Sie es noch einmal.",
    ),
    (
        "refusal-recorded",
        "refusal recorded as evidence under",
        "Ablehnung als Nachweis festgehalten unter",
    ),
    // Legal
    ("legal-title", "Evidence search", "Nachweissuche"),
    (
        "legal-intro",
        "Search the delivery evidence. You see who sent what (by digest) to whom and when, never the content or the subject.",
        "Durchsuchen Sie die Zustellnachweise. Sie sehen, wer was (als Hashwert) wann an wen gesendet hat, nie Inhalt oder Betreff.",
    ),
    (
        "legal-scope",
        "Your access is limited to these mailboxes:",
        "Ihr Zugriff ist auf diese Postfächer beschränkt:",
    ),
    (
        "message-id",
        "Message number or Message-ID",
        "Nachrichtennummer oder Message-ID",
    ),
    ("sender", "Sender", "Absender"),
    ("recipient", "Recipient", "Empfänger"),
    (
        "time-from",
        "From (date or time, UTC)",
        "Von (Datum oder Zeit, UTC)",
    ),
    (
        "time-until",
        "Until (date or time, UTC)",
        "Bis (Datum oder Zeit, UTC)",
    ),
    (
        "time-hint",
        "For example 2026-11-30 or 2026-11-30T14:00:00Z.",
        "Zum Beispiel 2026-11-30 oder 2026-11-30T14:00:00Z.",
    ),
    ("search", "Search", "Suchen"),
    (
        "invalid-address",
        "This is not a valid email address.",
        "Das ist keine gültige E-Mail-Adresse.",
    ),
    ("results", "Results", "Ergebnisse"),
    (
        "no-results",
        "No evidence matches.",
        "Keine Nachweise gefunden.",
    ),
    ("event", "Event", "Ereignis"),
    ("time", "Time", "Zeit"),
    ("more-results", "More results", "Weitere Ergebnisse"),
    (
        "legal-message-title",
        "Evidence of a message",
        "Nachweise einer Nachricht",
    ),
    (
        "printable-receipt",
        "Printable receipt",
        "Druckbare Quittung",
    ),
    (
        "export-bundle",
        "Export proof bundle",
        "Nachweispaket exportieren",
    ),
    (
        "export-audited",
        "Every export is recorded with your name.",
        "Jeder Export wird mit Ihrem Namen festgehalten.",
    ),
    ("receipt-title", "Delivery receipt", "Zustellquittung"),
    (
        "receipt-intro",
        "This receipt summarises the signed evidence the gateway recorded for one message and one recipient. The evidence itself is in the proof bundle; the steps below check it without trusting the gateway.",
        "Diese Quittung fasst die signierten Nachweise zusammen, die das Gateway für eine Nachricht und einen Empfänger festgehalten hat. Die Nachweise selbst stehen im Nachweispaket; mit den Schritten unten prüfen Sie sie, ohne dem Gateway vertrauen zu müssen.",
    ),
    ("parties", "Parties", "Beteiligte"),
    ("message-facts", "The message", "Die Nachricht"),
    ("message-size", "Size", "Größe"),
    (
        "message-digest",
        "SHA-256 of the message",
        "SHA-256 der Nachricht",
    ),
    ("submitted-at", "Submitted", "Eingereicht"),
    ("events", "Events", "Ereignisse"),
    ("meaning", "What it proves", "Was es beweist"),
    ("reason", "Reason", "Grund"),
    ("evidence-id", "Evidence id", "Nachweis-ID"),
    (
        "record-digest",
        "SHA-256 of the record",
        "SHA-256 des Datensatzes",
    ),
    ("log-index", "Log position", "Position im Protokoll"),
    (
        "evidence-key",
        "Evidence key fingerprint",
        "Fingerabdruck des Nachweisschlüssels",
    ),
    ("issuer", "Issuing gateway", "Ausstellendes Gateway"),
    ("verify-steps", "How to verify", "So prüfen Sie"),
    (
        "verify-1",
        "Obtain the proof bundle of this message and recipient: legal staff export it from this page, the sender downloads it from the message.",
        "Beschaffen Sie das Nachweispaket dieser Nachricht und dieses Empfängers: Die Rechtsabteilung exportiert es auf dieser Seite, der Absender lädt es bei der Nachricht herunter.",
    ),
    (
        "verify-2",
        "Obtain the gateway's evidence key fingerprint independently (published at /log/key and via WKD) and compare it with the fingerprint on this receipt.",
        "Beschaffen Sie den Fingerabdruck des Nachweisschlüssels unabhängig (veröffentlicht unter /log/key und per WKD) und vergleichen Sie ihn mit dem auf dieser Quittung.",
    ),
    (
        "verify-3",
        "Run: bote verify BUNDLE --key FINGERPRINT. It checks every signature, the chain of records and their inclusion in the public transparency log.",
        "Führen Sie aus: bote verify PAKET --key FINGERABDRUCK. Es prüft jede Signatur, die Kette der Datensätze und ihre Aufnahme in das öffentliche Transparenzprotokoll.",
    ),
    (
        "verify-4",
        "Or follow the README inside the bundle to check each record with gpg --verify.",
        "Oder folgen Sie der README im Paket, um jeden Datensatz mit gpg --verify zu prüfen.",
    ),
    (
        "print",
        "Print this page with your browser (Print → Save as PDF) for the file.",
        "Drucken Sie diese Seite mit Ihrem Browser (Drucken → Als PDF speichern) für die Akte.",
    ),
    ("recipients", "Recipients", "Empfänger"),
    // Failure codes of the core (Failure::code)
    (
        "bad-credentials",
        "Wrong email address or password.",
        "E-Mail-Adresse oder Passwort ist falsch.",
    ),
    (
        "locked-out",
        "Too many failed attempts. Please wait before trying again.",
        "Zu viele Fehlversuche. Bitte warten Sie, bevor Sie es erneut versuchen.",
    ),
    (
        "unauthenticated",
        "Please log in.",
        "Bitte melden Sie sich an.",
    ),
    (
        "no-second-factor",
        "No second factor is set up for your account yet.",
        "Für Ihr Konto ist noch kein zweiter Faktor eingerichtet.",
    ),
    (
        "bad-code",
        "The one-time code is wrong or was used already.",
        "Der Einmalcode ist falsch oder wurde schon verwendet.",
    ),
    (
        "needs-high",
        "This needs a session at level high: raise it under Security.",
        "Dafür brauchen Sie eine Sitzung mit Niveau hoch: Heben Sie sie unter Sicherheit an.",
    ),
    (
        "forbidden",
        "You are not allowed to do this.",
        "Das dürfen Sie nicht.",
    ),
    (
        "not-found",
        "Not found: it does not exist, or it is not yours.",
        "Nicht gefunden: Es existiert nicht oder gehört nicht Ihnen.",
    ),
    (
        "no-mailbox-yet",
        "You have no mailbox to read yet. If an operator added you to an office mailbox, choose your own password under Security first; then a member of the office gives you access once they have compared your key's fingerprint (under Settings) with you.",
        "Sie haben noch kein Postfach zum Lesen. Wenn der Betrieb Sie einem Behördenpostfach hinzugefügt hat, wählen Sie zuerst unter Sicherheit Ihr eigenes Passwort; dann gibt Ihnen ein Mitglied des Amts Zugang, sobald es den Fingerabdruck Ihres Schlüssels (unter Einstellungen) mit Ihnen verglichen hat.",
    ),
    (
        "personal-needs-high",
        "This message is personal: open it from a session at level high (raise it under Security).",
        "Diese Nachricht ist persönlich: Öffnen Sie sie aus einer Sitzung mit Niveau hoch (unter Sicherheit anheben).",
    ),
    (
        "message-too-large",
        "The message is too large.",
        "Die Nachricht ist zu groß.",
    ),
    (
        "message-too-complex",
        "The message has too many parts.",
        "Die Nachricht hat zu viele Teile.",
    ),
    (
        "too-many-recipients",
        "Too many recipients.",
        "Zu viele Empfänger.",
    ),
    (
        "unknown-recipient",
        "A recipient cannot receive messages here.",
        "Ein Empfänger kann hier keine Nachrichten empfangen.",
    ),
    (
        "option-not-allowed",
        "This option is not allowed for this message",
        "Diese Option ist für diese Nachricht nicht erlaubt",
    ),
    (
        "quota-exceeded",
        "You have reached today's limit of messages.",
        "Sie haben die heutige Höchstzahl an Nachrichten erreicht.",
    ),
    (
        "sender-required",
        "Choose the mailbox to send from.",
        "Wählen Sie das Postfach, aus dem Sie senden.",
    ),
    (
        "sender-mismatch",
        "You cannot send from that address.",
        "Aus dieser Adresse können Sie nicht senden.",
    ),
    (
        "rate-limited",
        "Too many requests. Please wait a moment.",
        "Zu viele Anfragen. Bitte warten Sie einen Moment.",
    ),
    (
        "recipient-required",
        "Choose the recipient whose evidence you want.",
        "Wählen Sie den Empfänger, dessen Nachweise Sie möchten.",
    ),
    (
        "gateway-id-required",
        "Several messages carry this Message-ID: give the gateway id of the one you want.",
        "Mehrere Nachrichten tragen diese Message-ID: Geben Sie die Gateway-ID der gewünschten an.",
    ),
    (
        "not-a-recipient",
        "That address is not a recipient of this message.",
        "Diese Adresse ist kein Empfänger dieser Nachricht.",
    ),
    (
        "password-policy",
        "The password does not meet the rules",
        "Das Passwort erfüllt die Regeln nicht",
    ),
    (
        "internal",
        "An internal error occurred. It has been logged; please try again later.",
        "Ein interner Fehler ist aufgetreten. Er wurde protokolliert; bitte versuchen Sie es später noch einmal.",
    ),
    (
        "busy",
        "The gateway is busy. Please try again in a moment.",
        "Das Gateway ist ausgelastet. Bitte versuchen Sie es gleich noch einmal.",
    ),
];

static INDEX: LazyLock<HashMap<&'static str, (&'static str, &'static str)>> =
    LazyLock::new(|| TABLE.iter().map(|(k, en, de)| (*k, (*en, *de))).collect());

/// The text of `key` in `lang`, if the table has it.
pub fn lookup(lang: Lang, key: &str) -> Option<&'static str> {
    INDEX.get(key).map(|(en, de)| match lang {
        Lang::En => *en,
        Lang::De => *de,
    })
}

/// The text of `key` in `lang`; a missing key shows as itself (and fails the unit test
/// that checks every key the templates use).
pub fn t(lang: Lang, key: &'static str) -> &'static str {
    lookup(lang, key).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::{INDEX, Lang, TABLE};

    #[test]
    fn accept_language() {
        assert_eq!(Lang::negotiate("de-DE,de;q=0.9,en;q=0.8"), Lang::De);
        assert_eq!(Lang::negotiate("fr, en;q=0.5, de;q=0.4"), Lang::En);
        assert_eq!(Lang::negotiate("en;q=0.2, de-AT;q=0.7"), Lang::De);
        assert_eq!(Lang::negotiate("fr"), Lang::En);
        assert_eq!(Lang::negotiate(""), Lang::En);
    }

    #[test]
    fn keys_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (k, _, _) in TABLE {
            assert!(seen.insert(*k), "duplicate key {k}");
        }
    }

    /// Every `c.t("…")` in a template and every literal key in the Rust code has both
    /// languages.
    #[test]
    fn every_key_used_is_translated() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        for dir in ["src/web/inbox/templates", "src/web/inbox"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("read dir") {
                let path = entry.expect("entry").path();
                if path.is_file() {
                    sources.push(std::fs::read_to_string(&path).expect("read"));
                }
            }
        }
        let mut missing = Vec::new();
        for text in &sources {
            for pattern in ["c.t(\"", "t(web.lang, \"", "t(lang, \"", "t(self.lang, \""] {
                for (i, _) in text.match_indices(pattern) {
                    let rest = &text[i + pattern.len()..];
                    let key = rest.split('"').next().unwrap_or_default();
                    if key != "…" && !INDEX.contains_key(key) {
                        missing.push(key.to_owned());
                    }
                }
            }
        }
        assert!(missing.is_empty(), "untranslated keys: {missing:?}");
    }
}
