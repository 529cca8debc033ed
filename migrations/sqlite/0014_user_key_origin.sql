-- Who could know the secrets that open a user's key: 'operator' while the key was made
-- by an operator's command (`bote user add`, `set-password`: the operator chose the
-- password and saw the recovery code), 'user' once the user changed their password
-- themselves and bote made them a new key that only they hold. Office mailbox grants
-- are confirmed only to keys the user made: the operator holds the others.
ALTER TABLE users ADD COLUMN key_origin TEXT NOT NULL DEFAULT 'operator'
    CHECK (key_origin IN ('operator', 'user'));
